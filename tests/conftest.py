import os
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    config.addinivalue_line("markers", "ray: starts a local Ray cluster (tests/test_ray.py, minutes); `-m 'not ray'` leaves it out")
