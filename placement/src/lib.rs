//! mock-kind's placement rules, the users' contract (namespace annotations `spoofed` and
//! `spoofed_excluded_pods`, pod annotation `nodeName`, node annotation and label `spoofed`):
//! `rules` decides once per pod and per node (the scheduler extender asks it for every
//! candidate node), `affinity` turns the same decision into what the webhook writes into a pod
//! in affinity mode, so that the stock scheduler enforces it with no extender.

pub mod affinity;
pub mod compiled;
pub mod rules;

pub use compiled::CompiledExclusions;
pub use rules::*;

#[cfg(test)]
mod decision_table;
