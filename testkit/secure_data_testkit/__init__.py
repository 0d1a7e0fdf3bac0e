"""Real services (OpenBao, Airflow) and generated datasets for tests, the demo and benchmarks."""
