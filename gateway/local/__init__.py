"""Local tiers: llama.cpp servers with packaged models, built, fetched and supervised on this machine.

Nothing here is imported by the request path; `recserve tiers ...` is the only entry point
(`gateway.local.commands.main`).
"""
