//! kube-scheduler extender: spoofed namespaces to hollow nodes, everything else to real nodes.
