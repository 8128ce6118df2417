"""pillar.example is a valid site and names every key the model knows."""

from tests.conftest import defaults, model_lib, read_yaml


def schema_paths(schema, here=()):
    """Every key path of the model's schema ("*" for names the operator chooses)."""
    if isinstance(schema, list):
        schema = schema[0]
    if not isinstance(schema, dict):
        return
    for key, sub in schema.items():
        yield here + (key,)
        yield from schema_paths(sub, here + (key,))


def present(value, path):
    if not path:
        return True
    if isinstance(value, list):
        return any(present(item, path) for item in value)
    if not isinstance(value, dict):
        return False
    key, rest = path[0], path[1:]
    if key == "*":
        return any(present(v, rest) for v in value.values())
    return key in value and present(value[key], rest)


def test_the_example_is_a_valid_site():
    model = model_lib.build(defaults(), read_yaml("pillar.example")["openstack_ha"])
    assert model["site"] == "eqiad1" and len(model["controllers"]) == 3


def test_the_example_names_every_key_of_the_model():
    example = read_yaml("pillar.example")["openstack_ha"]
    missing = ["openstack_ha:" + ":".join(p) for p in schema_paths(model_lib.SCHEMA) if not present(example, p)]
    assert missing == []


def test_the_json_schema_for_editors_is_up_to_date_and_accepts_the_example():
    import importlib.util
    import json
    import os

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("json_schema_script", os.path.join(REPO, "scripts", "json_schema.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with open(script.TARGET) as fh:
        assert fh.read() == script.render(), "docs/openstack_ha.schema.json is out of date: run scripts/json_schema.py"
    schema = json.loads(script.render())

    def unknown(value, node, here):
        """Key paths of ``value`` the schema does not allow (its additionalProperties: false)."""
        if node.get("type") == "array" and isinstance(value, list):
            return [p for item in value for p in unknown(item, node["items"], here)]
        if node.get("type") != "object" or not isinstance(value, dict):
            return []
        found = []
        for key, sub in value.items():
            if key in node.get("properties", {}):
                found += unknown(sub, node["properties"][key], here + [key])
            elif isinstance(node.get("additionalProperties"), dict):
                found += unknown(sub, node["additionalProperties"], here + [key])
            elif node.get("additionalProperties") is False:
                found.append(":".join(here + [key]))
        return found

    assert unknown(read_yaml("pillar.example"), schema, []) == []
    assert unknown({"openstack_ha": {"vips": {"public": {"adress": "x"}}}}, schema, []) == ["openstack_ha:vips:public:adress"]
