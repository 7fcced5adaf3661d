"""Kubernetes Services in the lab: what the API server and kube-controller-manager would do.

objects.py   Service objects from the spec or ``lab apply``, ClusterIP and NodePort allocation
controller.py   EndpointSlices derived from selectors and pod readiness (the EndpointSlice controller)
reconcile.py   after every change: slices written, kube-proxy rules and the cluster DNS brought in step
"""
