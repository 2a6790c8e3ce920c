"""The baseline client: a bare ``requests.Session`` + ``ThreadPoolExecutor`` posting the bodies
msgsend would send (KakaoTalk ``{"recipient", "message"}``, UTF-8 JSON, Basic auth) for every
row of a CSV file whose ``phone`` column is already normalised.

No validation, no rate limiter, no retries, no results file: what "as fast as the provider
allows" costs with nothing else. Prints one JSON line: rows, 200s, and the loop's own seconds
(first POST to last answer, imports and CSV reading excluded).

    python bench/bare_loop.py URL CSV [--concurrency 16] [--channel kakaotalk|sms]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from requests.adapters import HTTPAdapter

PATHS = {"kakaotalk": "/kakaotalk-messages", "sms": "/sms"}
FIELDS = {"kakaotalk": ("recipient", "message"), "sms": ("phoneNumber", "content")}
AUTH = {"kakaotalk": ("autoever", "1234"), "sms": ("autoever", "5678")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("csv")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--channel", default="kakaotalk", choices=sorted(PATHS))
    args = parser.parse_args()

    to_key, text_key = FIELDS[args.channel]
    with open(args.csv, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        bodies = [
            json.dumps(
                {to_key: row["phone"], text_key: row["message"]}, ensure_ascii=False
            ).encode()
            for row in reader
        ]
    url = args.base_url.rstrip("/") + PATHS[args.channel]
    auth = AUTH[args.channel]
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=args.concurrency))
    session.headers["Content-Type"] = "application/json; charset=utf-8"

    def post(body: bytes) -> int:
        response = session.post(url, data=body, auth=auth, timeout=5.0, allow_redirects=False)
        return response.status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        codes = list(pool.map(post, bodies))
    elapsed = time.perf_counter() - started
    print(json.dumps({"rows": len(bodies), "ok": codes.count(200), "loop_s": elapsed}))


if __name__ == "__main__":
    main()
