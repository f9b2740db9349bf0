//! Mutating admission webhook: OpenShift-style UIDs for runAsNonRoot pods.
