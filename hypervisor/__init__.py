"""VM placement and operations on the XenServer pool, through the XenAPI SDK.

Imports no other package of the project: the `arkiv cluster …` commands call into it, and it
talks to the pool (or to the XAPI simulator in `hypervisor.xapi_sim`) over XML-RPC only.
"""
