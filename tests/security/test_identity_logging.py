"""No part of an AppRole credential reaches a log line or an error message (issue 13: the first 8
characters of the role_id were logged)."""

from __future__ import annotations

import pytest

from secure_data_testkit.vault_fixtures import bootstrap_test_vault


def test_role_id_is_not_in_the_identity_or_a_login_error(openbao):
    from secure_data.vault.session import VaultSession

    creds = bootstrap_test_vault(openbao).role("sanitizer")
    session = VaultSession.for_approle(openbao.url, creds.role_id, creds.secret_id)
    assert creds.role_id[:4] not in session.identity
    wrong = VaultSession.for_approle(openbao.url, creds.role_id, "0" * 36, retries=0)
    with pytest.raises(Exception) as err:  # noqa: PT011 - the message is what is checked
        wrong.client()
    assert creds.role_id[:4] not in str(err.value) and creds.role_id[:4] not in repr(err.value)
