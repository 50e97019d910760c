"""The model server as the benchmarks run it: `create_app` with one LLM injected, served by uvicorn on the loopback.

`python bench/server.py --model PATH --port N [--device auto] [--max-queue 16]`; ready when GET /health/ready answers 200.
"""
from __future__ import annotations
import argparse, logging, sys
from pathlib import Path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True); p.add_argument("--port", type=int, required=True)
    p.add_argument("--device", default="auto"); p.add_argument("--max-queue", type=int, default=16)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s - %(levelname)s - %(message)s")
    import uvicorn
    from voice_agent.config import Settings
    from voice_agent.llm import OpenSourceLLM
    from voice_agent.model_server import create_app
    s = Settings.from_env(llm_model=a.model, stt_model="none", tts_model="none", llm_device=a.device,
                          max_queue=a.max_queue, host="127.0.0.1", port=a.port)
    llm = OpenSourceLLM(a.model, settings=s, device=a.device)
    app = create_app(s, models={"llm": llm})
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    sys.exit(main())
