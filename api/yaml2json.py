#!/usr/bin/env python3
"""Writes the JSON form of a YAML document: python3 api/yaml2json.py IN.yaml OUT.json

Used by the build (CMakeLists.txt) to serve api/openapi.yaml also as
/api/v1/openapi.json. Scalars are read as YAML 1.2 reads them (the spec's
parsers do): a date-like string stays a string, as it does for the `yaml`
package the contract test uses. Keys keep their order; the output is
compact, UTF-8, and written whole or not at all.
"""

import json
import os
import sys

import yaml


class SpecLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's timestamp type (1.2 has none)."""


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: yaml2json.py IN.yaml OUT.json")
    with open(sys.argv[1], encoding="utf-8") as source:
        document = yaml.load(source, Loader=SpecLoader)
    partial = sys.argv[2] + ".tmp"
    with open(partial, "w", encoding="utf-8") as out:
        json.dump(document, out, ensure_ascii=False, separators=(",", ":"))
        out.write("\n")
    os.replace(partial, sys.argv[2])


if __name__ == "__main__":
    main()
