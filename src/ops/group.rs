//! Group operations: add, remove, enable, clear, change the scheduler.

use super::{Args, GROUP, NEW_GROUP, OpError, SCHEDULER, SERVICE, bad};
use crate::config::{DEFAULT_SCHEDULER, GroupConfig, GroupOptions, HostConfig};
use crate::control::Command;
use crate::scheduler::SchedulerKind;

/// A group of a service, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    /// Service name.
    pub service: String,
    /// Group name.
    pub group: String,
}

impl GroupRef {
    /// Reads its parameters.
    pub fn parse(a: &Args) -> Result<GroupRef, OpError> {
        Ok(GroupRef {
            service: a.required(&SERVICE)?.into(),
            group: a.required(&GROUP)?.into(),
        })
    }

    pub(super) fn remove(self) -> (Command, String) {
        let GroupRef { service, group } = self;
        let text = format!("OK group {group} removed from service {service}");
        (Command::RemoveGroup { service, group }, text)
    }

    pub(super) fn enable(self) -> (Command, String) {
        let GroupRef { service, group } = self;
        let text = format!("OK group {group} of service {service} enabled");
        (Command::EnableGroup { service, group }, text)
    }

    pub(super) fn clear(self) -> (Command, String) {
        let GroupRef { service, group } = self;
        let text = format!("OK every host removed from group {group} of service {service}");
        (Command::RemoveAllHosts { service, group }, text)
    }
}

/// A scheduler by name, [`DEFAULT_SCHEDULER`] when absent and `optional`.
pub(super) fn scheduler(a: &Args, optional: bool) -> Result<SchedulerKind, OpError> {
    let param = if optional {
        SCHEDULER.optional()
    } else {
        SCHEDULER
    };
    match a.get(&param) {
        None if optional => Ok(DEFAULT_SCHEDULER),
        None => a.required(&param).map(|_| DEFAULT_SCHEDULER),
        Some(s) => s.parse().map_err(|e| bad(&param, format!("{e}"))),
    }
}

/// Add a group to a service.
#[derive(Debug, Clone, PartialEq)]
pub struct AddGroup {
    /// Service name.
    pub service: String,
    /// The new group (may have hosts, may be a backup group).
    pub group: Box<GroupConfig>,
}

impl AddGroup {
    /// Reads its parameters.
    pub fn parse(a: &Args) -> Result<AddGroup, OpError> {
        let service = a.required(&SERVICE)?;
        let group = a.required(&NEW_GROUP)?;
        Ok(AddGroup::new(
            service,
            group,
            scheduler(a, true)?,
            Vec::new(),
            false,
        ))
    }

    /// A group with these hosts, a backup group when `backup`.
    pub fn new(
        service: &str,
        group: &str,
        scheduler: SchedulerKind,
        hosts: Vec<HostConfig>,
        backup: bool,
    ) -> AddGroup {
        AddGroup {
            service: service.into(),
            group: Box::new(GroupConfig {
                options: GroupOptions {
                    backup,
                    ..Default::default()
                },
                ..GroupConfig::new(group, scheduler, hosts)
            }),
        }
    }

    pub(super) fn change(self) -> (Command, String) {
        let AddGroup { service, group } = self;
        let text = format!(
            "OK group {} ({}) added to service {service}",
            group.name, group.scheduler
        );
        (Command::AddGroup { service, group }, text)
    }
}

/// Change a group's scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetScheduler {
    /// The group.
    pub group: GroupRef,
    /// Its new scheduler.
    pub scheduler: SchedulerKind,
}

impl SetScheduler {
    /// The group and the scheduler's name (required).
    pub fn parse(a: &Args) -> Result<SetScheduler, OpError> {
        Ok(SetScheduler {
            group: GroupRef::parse(a)?,
            scheduler: scheduler(a, false)?,
        })
    }

    pub(super) fn change(self) -> (Command, String) {
        let GroupRef { service, group } = self.group;
        let scheduler = self.scheduler;
        let text = format!("OK group {group} of service {service} now uses scheduler {scheduler}");
        let command = Command::SetScheduler {
            service,
            group,
            scheduler,
        };
        (command, text)
    }
}
