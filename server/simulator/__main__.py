"""``python -m server.simulator [--host H] [--port P]``: a standalone simulator, e.g. a benchmark's fake provider."""

from __future__ import annotations

import argparse

import uvicorn

from server.simulator.app import create_simulator_app
from server.simulator.runner import SimulatorBaseUrls


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m server.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    arguments = parser.parse_args()
    urls = SimulatorBaseUrls.for_origin(f"http://{arguments.host}:{arguments.port}")
    print(f"OPENAI_BASE_URL={urls.openai}\nANTHROPIC_BASE_URL={urls.anthropic}\nGEMINI_BASE_URL={urls.gemini}")
    uvicorn.run(create_simulator_app(), host=arguments.host, port=arguments.port, access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
