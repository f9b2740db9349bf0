//! Hollow kubelet: many fake Nodes and their pods from one small process.
