"""Fetches a Prometheus text exposition and parses it with prometheus_client's
own parser (independent of the exporter that wrote it). Prints one JSON
object: {"samples": [[name, {labels}, value], ...]}. Exits non-zero if the
exposition does not parse."""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main() -> None:
    url = sys.argv[1]
    with urllib.request.urlopen(url, timeout=10) as response:
        if response.status != 200:
            sys.exit(f"GET {url}: HTTP {response.status}")
        text = response.read().decode("utf-8")
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.append([sample.name, sample.labels, sample.value])
    json.dump({"samples": samples}, sys.stdout)


if __name__ == "__main__":
    main()
