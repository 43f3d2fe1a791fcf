"""Every process the lab starts, with one lifecycle (lifecycle.ManagedProcess): the servers it
measures (servers/: the lab's own, real TF Serving, Docker, nginx in front of replicas), and the
helpers around them (Redis, echo servers, load generator workers use ManagedProcess directly).
"""
