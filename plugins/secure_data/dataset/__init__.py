"""Dataset layout (YOLO), manifest records, storage and atomic writes. No Airflow imports."""
