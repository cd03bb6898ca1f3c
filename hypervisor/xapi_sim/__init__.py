"""A faithful XAPI simulator (XML-RPC) for the hypervisor package's tests and for demos.

Run `python -m hypervisor.xapi_sim` for a demo pool; in tests use
`with XapiSimulator(hosts=[HostSpec(...)], templates=[TemplateSpec(...)]) as sim:` and the real
`XenAPI.Session(sim.url)`. See docs/XAPI_SIMULATOR.md.
"""

from hypervisor.xapi_sim.errors import ApiError
from hypervisor.xapi_sim.faults import Faults
from hypervisor.xapi_sim.simulator import (
    DEMO_TEMPLATES,
    HostSpec,
    TemplateSpec,
    XapiSimulator,
    demo_hosts,
)

__all__ = [
    "DEMO_TEMPLATES",
    "ApiError",
    "Faults",
    "HostSpec",
    "TemplateSpec",
    "XapiSimulator",
    "demo_hosts",
]
