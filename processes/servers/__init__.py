"""Every server kind the lab measures: its own server (launcher.py), real TF Serving (binary or
Docker image), servers someone else runs (external), and several replicas behind a load balancer
(nginx).

Each kind starts from the same resolved server configuration as the lab's server, waits for
AVAILABLE through TF Serving's model status API, and hands back a ServerHandle (handle.py) with
one REST URL and one gRPC target.
"""
