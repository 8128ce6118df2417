"""Write docs/openstack_ha.schema.json, the JSON Schema of the openstack_ha pillar's keys, from
the validator's own list of keys (_utils/openstack_ha_model.py: SCHEMA). Run after changing it;
tests/unit/test_pillar_example.py fails while the file is out of date.

Usage: .venv/bin/python scripts/json_schema.py
"""

import importlib.util
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(REPO, "docs", "openstack_ha.schema.json")


def render():
    spec = importlib.util.spec_from_file_location("openstack_ha_model", os.path.join(REPO, "_utils", "openstack_ha_model.py"))
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)
    return json.dumps(model.json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    with open(TARGET, "w") as fh:
        fh.write(render())
    print("wrote", os.path.relpath(TARGET, REPO))
