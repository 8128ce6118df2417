"""
State: the Keystone catalog of a site matches the ``openstack_ha`` pillar model.

:depends: the ``openstack_ha`` runner; runs on the master (the admin credentials live in the
    master config, never in a controller's pillar), through the orchestrate runner:

.. code-block:: bash

    salt-run state.orchestrate openstack_ha.orch.catalog            # the only site
    salt-run state.orchestrate openstack_ha.orch.catalog test=True
    salt-run state.orchestrate openstack_ha.orch.catalog pillar='{"site": "eqiad1"}'

.. code-block:: yaml

    keystone catalog:
      openstack_ha_catalog.present:
        - site: lab
"""

__virtualname__ = "openstack_ha_catalog"


def __virtual__():
    return __virtualname__


def present(name, site=None):
    """
    Every service of the model, for every interface, in the region, with the URL the
    endpoint mode asks for: created where missing, a drifted URL updated in place.

    name
        a label for the state.
    site
        the site (default: the only one the master knows).

    Honours ``test=True`` (reports what would change, changes nothing); ``changes`` holds
    each endpoint created or updated with its old and new URL.
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    if __opts__.get("__role") != "master":
        ret["comment"] = ("openstack_ha_catalog runs on the master, where the Keystone admin account is: "
                          "salt-run state.orchestrate openstack_ha.orch.catalog")
        return ret
    outcome = __salt__["saltutil.runner"]("openstack_ha.catalog", site=site, test=bool(__opts__.get("test")))
    if not isinstance(outcome, dict) or "result" not in outcome:
        ret["comment"] = "the openstack_ha.catalog runner failed: {}".format(outcome)
        return ret
    ret.update(result=outcome["result"], changes=outcome["changes"], comment=outcome["comment"])
    return ret
