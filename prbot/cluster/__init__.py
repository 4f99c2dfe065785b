"""Clusters: the one place prbot talks to Kubernetes.

- `clusters`: the operator's `PRBOT_CLUSTERS` map (kubeconfig + context per cluster name).
- `client`: the only module importing the kubernetes client (`ClusterClient`).
- `dryrun`: the plan's server-side dry-run, within the namespaces a target owns.
- `sync`, `health`: pure — the writes a sync asks for (Argo CD, Flux, direct apply) and the
  progress read from live objects; testable without a server.
- `deploy`: the thin side-effecting part that sends the sync and polls health (`Deployer`).

Importing this package imports nothing of the kubernetes client; `client`, `dryrun` and `deploy` do.
"""
