"""The service fixtures are real, and fail loudly when the service is broken."""

from __future__ import annotations

import json
import urllib.request

import pytest

from secure_data_testkit.openbao import OpenBaoServer


def test_openbao_fixture_is_a_real_unsealed_server(openbao):
    with urllib.request.urlopen(openbao.url + "/v1/sys/health") as resp:
        health = json.load(resp)
    assert health["initialized"] is True and health["sealed"] is False
    assert health["version"].startswith("2.")


def test_openbao_start_fails_clearly_when_the_port_is_taken(openbao):
    # A second server on the same port must not pretend to be up.
    with pytest.raises((RuntimeError, TimeoutError)):
        OpenBaoServer(port=openbao.port).start(timeout=5)


def test_persistent_openbao_survives_restart(tmp_path):
    import hvac

    with OpenBaoServer(persistent=True, workdir=tmp_path / "bao") as server:
        client = hvac.Client(url=server.url, token=server.root_token)
        client.sys.enable_secrets_engine("transit")
        client.secrets.transit.create_key("survivor")
        server.restart()
        client = hvac.Client(url=server.url, token=server.root_token)
        assert client.secrets.transit.read_key("survivor")["data"]["name"] == "survivor"
        server.seal()
        assert client.sys.is_sealed()


def test_airflow_home_has_a_migrated_sqlite_db(airflow_home):
    import sqlite3

    con = sqlite3.connect(airflow_home / "airflow.db")
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    assert {"dag", "dag_run", "task_instance", "xcom"} <= tables
