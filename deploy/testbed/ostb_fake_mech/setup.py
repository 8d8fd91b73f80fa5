# Testbed-only ML2 mechanism driver that binds every normal port without an
# L2 agent. A setup.py rather than a pyproject.toml: every *.toml under
# deploy/ is a warmpoold config (server/tests/deploy_files.rs loads them all).
from setuptools import setup

setup(
    name="ostb-fake-mech",
    version="0.1.0",
    description="Testbed-only ML2 mechanism driver that binds every normal port without an L2 agent",
    python_requires=">=3.9",
    packages=["ostb_fake_mech"],
    entry_points={
        "neutron.ml2.mechanism_drivers": [
            "ostb_fake = ostb_fake_mech:FakeBindMechanismDriver",
        ],
    },
)
