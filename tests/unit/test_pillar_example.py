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
