"""prbot: pull-request review as the deployment gate for Kubernetes GitOps repositories."""

__version__ = "0.1.0"
