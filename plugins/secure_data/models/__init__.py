"""Model plumbing shared by the anonymize and poisoning stages: pinned model files (loaded only when
their SHA-256 is the deployment's pin), the device a worker runs a model on, and letterboxing of
decoded images into batches. No Airflow; heavy libraries are imported inside the functions."""
