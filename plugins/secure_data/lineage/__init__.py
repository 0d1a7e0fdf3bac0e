"""OpenLineage for the secure-data operators (active only where apache-airflow-providers-openlineage is installed).

``mixin.OpenLineageMixin`` is what the operators inherit; it imports nothing until the provider's
listener calls it. ``facets`` builds the datasets and facets; ``schemas/`` holds the JSON schemas of
the custom facets (``secureData_*``).
"""
