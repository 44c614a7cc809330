"""Talk to an ocak character by voice: a WAV file plays the part of the microphone.

    python examples/voice_client.py SESSION_ID line.wav answer.wav [--url ws://127.0.0.1:8000]

The file is sent as the microphone would send it (16 kHz 16-bit mono PCM, 20 ms frames,
in real time unless --fast), then silence, until ocak has heard the line, answered and
spoken; the answer's audio is saved to ``answer.wav`` and what happened is printed:
what ocak heard, what the character said, its emotion, and how many visemes came for
lip-sync. Needs only ``websockets`` and numpy-free stdlib (the file must be 16 kHz mono
16-bit WAV, e.g. ``ffmpeg -i in.mp3 -ar 16000 -ac 1 line.wav``). Set OCAK_API_KEY when
the server has keys.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import wave

from websockets.sync.client import connect

FRAME = 320  # samples: 20 ms at 16 kHz


def read_line(path: str) -> bytes:
    with wave.open(path, "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
            sys.exit(f"{path}: need 16 kHz mono 16-bit WAV (ffmpeg -ar 16000 -ac 1)")
        return w.readframes(w.getnframes())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("session")
    ap.add_argument("line", help="16 kHz mono 16-bit WAV: what the player says")
    ap.add_argument("answer", help="where to write the character's spoken answer (WAV)")
    ap.add_argument("--url", default="ws://127.0.0.1:8000")
    ap.add_argument("--fast", action="store_true", help="send the audio faster than real time")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()

    key = os.environ.get("OCAK_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"{args.url}/v1/sessions/{args.session}/voice?voice_format=pcm"
    pcm = read_line(args.line) + b"\0\0" * 16000 * 2  # then two seconds of quiet
    audio, rate, summary = bytearray(), 22050, {}
    with connect(url, additional_headers=headers, max_size=2**24) as ws:
        ready = json.loads(ws.recv())
        if ready["type"] != "ready":
            sys.exit(f"ocak refused: {ready}")
        rate = ready["output"]["sample_rate"]
        for i in range(0, len(pcm), FRAME * 2):
            ws.send(pcm[i : i + FRAME * 2])
            if not args.fast:
                time.sleep(FRAME / 16000)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=deadline - time.monotonic()))
            kind = message["type"]
            if kind == "transcript":
                print(f"heard:   {message['text']}")
            elif kind == "audio":
                audio += base64.b64decode(message["audio"])
                summary["visemes"] = summary.get("visemes", 0) + len(message["visemes"])
            elif kind == "audio_reset":
                audio.clear()
            elif kind == "error":
                sys.exit(f"error: {message['error']['message']}")
            elif kind == "done":
                turn = message["turn"]
                print(f"{turn['name']}: {turn['text']}")
                print(f"emotion: {turn['emotion']['label']}  visemes: {summary.get('visemes', 0)}")
                break
        else:
            sys.exit("no answer in time")
    with wave.open(args.answer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(audio))
    print(f"saved:   {args.answer} ({len(audio) / 2 / rate:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
