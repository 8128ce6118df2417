"""The RabbitMQ accounts read (``_modules/openstack_ha_rabbitmq.py``): one ``export_definitions``
answers for users, vhosts, permissions, policies and passwords; the passwords are checked
against RabbitMQ's stored hashes here (vectors from RabbitMQ's "Credentials and Passwords"
guide); where that cannot be told, or the export fails, RabbitMQ is asked as before."""

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_module

rabbit = load_module("_modules/openstack_ha_rabbitmq.py", "openstack_ha_rabbitmq_accounts")

SHA256_TEST12 = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"  # "test12", salt 908DC60A
MD5_SIMON = "ytUIm8s3AnKsXQjptplKFytfVxI="  # "simon", salt CAD5089B


@pytest.mark.parametrize("password, stored, algorithm, expected", [
    ("test12", SHA256_TEST12, "rabbit_password_hashing_sha256", True),
    ("test12", SHA256_TEST12, None, True),  # no module named: RabbitMQ's default, SHA-256
    ("test13", SHA256_TEST12, "rabbit_password_hashing_sha256", False),
    ("simon", MD5_SIMON, "rabbit_password_hashing_md5", True),
    ("simon", SHA256_TEST12, "rabbit_password_hashing_md5", None),  # a hash of another length
    ("test12", SHA256_TEST12, "rabbit_password_hashing_scrypt", None),  # a module unknown here
    ("test12", "", "rabbit_password_hashing_sha256", None),  # no password set
    ("test12", "not base64!", "rabbit_password_hashing_sha256", None),
])
def test_a_password_is_checked_against_rabbitmqs_stored_hash(password, stored, algorithm, expected):
    assert rabbit.password_matches(password, stored, algorithm) is expected


DEFINITIONS = {
    "rabbit_version": "3.10.8",
    "users": [
        {"name": "openstack", "password_hash": SHA256_TEST12, "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []},
        {"name": "openstack-ha-monitor", "password_hash": MD5_SIMON, "hashing_algorithm": "rabbit_password_hashing_md5",
         "tags": ["monitoring"]},
        {"name": "old", "password_hash": SHA256_TEST12, "hashing_algorithm": "rabbit_password_hashing_scrypt",
         "tags": "administrator,monitoring"},
    ],
    "vhosts": [{"name": "/"}, {"name": "nova"}],
    "permissions": [{"user": "openstack", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
                    {"user": "old", "vhost": "elsewhere", "configure": "", "write": "", "read": ""}],
    "policies": [{"vhost": "/", "name": "ha", "pattern": "^(?!amq\\.).*", "apply-to": "queues", "priority": 0,
                  "definition": {"queue-mode": "default"}}],
}
WANTED = {"openstack": {"password": "test12"}, "openstack-ha-monitor": {"password": "wrong"},
          "old": {"password": "test12"}, "new": {"password": "x"}}


def test_the_definitions_answer_every_question_of_an_apply():
    view = rabbit._definitions_view(DEFINITIONS, ["/", "keystone"], WANTED)
    assert view["users"] == {"openstack": [], "openstack-ha-monitor": ["monitoring"], "old": ["administrator", "monitoring"]}
    assert view["vhosts"] == ["/", "nova"]
    assert view["permissions"] == {"/": {"openstack": [".*", ".*", ".*"]}}  # "keystone" does not exist yet
    assert view["policies"] == {"/": {"ha": {"pattern": "^(?!amq\\.).*", "apply-to": "queues", "priority": 0,
                                             "definition": {"queue-mode": "default"}}}}
    assert view["passwords"] == {"openstack": True, "openstack-ha-monitor": False, "old": None}  # "new" does not exist
    assert "password_hash" not in repr(view) and SHA256_TEST12 not in repr(view)


def test_one_export_and_rabbitmq_asked_only_what_the_hashes_cannot_tell(monkeypatch):
    calls = []

    def ctl(*args, **kwargs):
        calls.append(args[0])
        if args[0] == "export_definitions":
            import json
            return json.dumps(DEFINITIONS)
        if args[0] == "authenticate_user":
            return "Success\n"
        raise AssertionError("asked {} though the export answered".format(args))
    monkeypatch.setattr(rabbit, "_ctl", ctl)
    now = rabbit._read_accounts(["/"], WANTED)
    assert calls == ["export_definitions", "authenticate_user"]  # "old" only: scrypt is not known here
    assert now["passwords"] == {"openstack": True, "openstack-ha-monitor": False, "old": True}


def test_without_the_export_each_question_is_asked_as_before(monkeypatch):
    calls = []

    def ctl(*args, **kwargs):
        calls.append(args[0])
        if args[0] == "export_definitions":
            raise CommandExecutionError("rabbitmqctl export_definitions failed: Error: unable to perform an operation")
        if args[0] == "authenticate_user":
            return "Success\n"
        return {"list_users": '[{"user": "openstack", "tags": []}]', "list_vhosts": '[{"name": "/"}]'}.get(args[0], "[]")
    monkeypatch.setattr(rabbit, "_ctl", ctl)
    now = rabbit._read_accounts(["/"], {"openstack": {"password": "test12"}})
    assert calls[0] == "export_definitions" and {"list_users", "list_vhosts", "list_permissions", "list_policies",
                                                 "authenticate_user"} <= set(calls)
    assert now["users"] == {"openstack": []} and now["vhosts"] == ["/"] and now["passwords"] == {"openstack": True}


def test_an_export_of_an_unknown_form_falls_back_to_the_questions(monkeypatch):
    calls = []

    def ctl(*args, **kwargs):
        calls.append(args[0])
        if args[0] == "export_definitions":
            return '{"users": [{"name": "openstack"}], "vhosts": [{"title": "/"}]}'  # no vhost "name"
        if args[0] == "authenticate_user":
            return "Success\n"
        return {"list_users": '[{"user": "openstack", "tags": []}]', "list_vhosts": '[{"name": "/"}]'}.get(args[0], "[]")
    monkeypatch.setattr(rabbit, "_ctl", ctl)
    now = rabbit._read_accounts(["/"], {"openstack": {"password": "test12"}})
    assert "list_users" in calls and now["vhosts"] == ["/"] and now["passwords"] == {"openstack": True}
