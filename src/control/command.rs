//! Commands: every change to the running balancer, whatever asked for it (reload,
//! web, API, SSH, embedding handle), and how each edits the configuration model.

use std::collections::HashSet;

use crate::config::{
    AdminConfig, Config, GroupConfig, HostAddress, HostConfig, ListenAddr, Listener, NameKind,
    ServiceConfig, UserConfig, check_name, parse_host_address,
};
use crate::scheduler::SchedulerKind;

use super::ControlError;

/// One change to the running balancer.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Replace the whole configuration (SIGHUP reload). Counters of hosts that
    /// keep their service, group and name are kept.
    Replace(Box<Config>),
    /// Add a service with its listeners and groups.
    AddService(Box<ServiceConfig>),
    /// Remove a service; its listeners close, its connections continue.
    RemoveService {
        /// Service name.
        service: String,
    },
    /// Start listening on one more address for a service.
    AddListener {
        /// Service name.
        service: String,
        /// Address to listen on, with its settings.
        listen: Listener,
    },
    /// Stop listening on an address.
    RemoveListener {
        /// Service name.
        service: String,
        /// Address as configured.
        listen: ListenAddr,
    },
    /// Add a group to a service.
    AddGroup {
        /// Service name.
        service: String,
        /// The new group (may already have hosts).
        group: GroupConfig,
    },
    /// Remove a group that is not enabled.
    RemoveGroup {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// Switch the enabled group; established connections continue.
    EnableGroup {
        /// Service name.
        service: String,
        /// Group to enable.
        group: String,
    },
    /// Change a group's scheduler.
    SetScheduler {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// The new scheduler.
        scheduler: SchedulerKind,
    },
    /// Add a host to a group.
    AddHost {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// The new host.
        host: HostConfig,
    },
    /// Remove a host; refused for the last host of the enabled group.
    RemoveHost {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
    },
    /// Remove every host of a group that is not enabled.
    RemoveAllHosts {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
    },
    /// Take a host out of rotation without removing it (`down = true`), or back.
    SetAdminDown {
        /// Service name.
        service: String,
        /// Group name.
        group: String,
        /// Host name.
        host: String,
        /// Down or back up.
        down: bool,
    },
    /// Add an admin user.
    AddUser(UserConfig),
    /// Remove an admin user.
    RemoveUser {
        /// Login name.
        name: String,
    },
}

impl Command {
    /// Host addresses this command introduces, to resolve before applying it.
    pub(crate) fn new_addresses(&self) -> Vec<HostAddress> {
        let groups: Vec<&GroupConfig> = match self {
            Command::Replace(config) => config.services.iter().flat_map(|s| &s.groups).collect(),
            Command::AddService(service) => service.groups.iter().collect(),
            Command::AddGroup { group, .. } => vec![group],
            Command::AddHost { host, .. } => return vec![host.address.clone()],
            _ => return Vec::new(),
        };
        groups
            .into_iter()
            .flat_map(|g| g.hosts.iter().map(|h| h.address.clone()))
            .collect()
    }

    /// Applies the command to a copy of the running configuration. Runtime-only
    /// changes (admin-down) leave it untouched; the controller handles them.
    pub(crate) fn edit(&self, config: &mut Config) -> Result<(), ControlError> {
        match self {
            Command::Replace(new) => {
                let source = config.source.clone();
                *config = (**new).clone();
                if config.source.is_none() {
                    config.source = source;
                }
                check_names(config)?;
                for service in &config.services {
                    refuse_backup_enabled(service)?;
                }
            }
            Command::AddService(service) => {
                if config.services.iter().any(|s| s.name == service.name) {
                    return Err(ControlError::DuplicateService(service.name.clone()));
                }
                check_service(service)?;
                config.services.push((**service).clone());
            }
            Command::RemoveService { service } => {
                let before = config.services.len();
                config.services.retain(|s| &s.name != service);
                if config.services.len() == before {
                    return Err(ControlError::UnknownService(service.clone()));
                }
            }
            Command::AddListener { service, listen } => {
                service_mut(config, service)?.listeners.push(listen.clone());
            }
            Command::RemoveListener { service, listen } => {
                let s = service_mut(config, service)?;
                let index = s
                    .listeners
                    .iter()
                    .position(|l| l.addr == *listen)
                    .ok_or_else(|| ControlError::UnknownListener {
                        service: service.clone(),
                        listen: listen.to_string(),
                    })?;
                if s.listeners.len() == 1 {
                    return Err(ControlError::LastListener(service.clone()));
                }
                s.listeners.remove(index);
            }
            Command::AddGroup { service, group } => {
                let s = service_mut(config, service)?;
                if s.groups.iter().any(|g| g.name == group.name) {
                    return Err(ControlError::DuplicateGroup {
                        service: service.clone(),
                        group: group.name.clone(),
                    });
                }
                check_group(service, group)?;
                s.groups.push(group.clone());
            }
            Command::RemoveGroup { service, group } => {
                let s = service_mut(config, service)?;
                refuse_enabled(s, group)?;
                let index = group_index(s, group)?;
                s.groups.remove(index);
            }
            Command::EnableGroup { service, group } => {
                let s = service_mut(config, service)?;
                let index = group_index(s, group)?;
                if s.groups[index].options.backup {
                    return Err(ControlError::BackupGroupEnabled {
                        service: service.clone(),
                        group: group.clone(),
                    });
                }
                if s.groups[index].hosts.is_empty() {
                    return Err(ControlError::EmptyGroup {
                        service: service.clone(),
                        group: group.clone(),
                    });
                }
                s.enabled_group = group.clone();
            }
            Command::SetScheduler {
                service,
                group,
                scheduler,
            } => group_mut(config, service, group)?.scheduler = *scheduler,
            Command::AddHost {
                service,
                group,
                host,
            } => {
                let g = group_mut(config, service, group)?;
                if g.hosts.iter().any(|h| h.name == host.name) {
                    return Err(ControlError::DuplicateHost {
                        service: service.clone(),
                        group: group.clone(),
                        host: host.name.clone(),
                    });
                }
                check_host(host)?;
                g.hosts.push(host.clone());
            }
            Command::RemoveHost {
                service,
                group,
                host,
            } => {
                let s = service_mut(config, service)?;
                let enabled = s.enabled_group == *group;
                let index = group_index(s, group)?;
                let g = &mut s.groups[index];
                let index = g
                    .hosts
                    .iter()
                    .position(|h| &h.name == host)
                    .ok_or_else(|| ControlError::UnknownHost {
                        service: service.clone(),
                        group: group.clone(),
                        host: host.clone(),
                    })?;
                if enabled && g.hosts.len() == 1 {
                    return Err(ControlError::LastHostOfEnabledGroup {
                        service: service.clone(),
                        group: group.clone(),
                    });
                }
                g.hosts.remove(index);
            }
            Command::RemoveAllHosts { service, group } => {
                let s = service_mut(config, service)?;
                refuse_enabled(s, group)?;
                let index = group_index(s, group)?;
                s.groups[index].hosts.clear();
            }
            Command::SetAdminDown { .. } => {}
            Command::AddUser(user) => {
                let admin = config.admin.get_or_insert_with(AdminConfig::default);
                if admin.users.iter().any(|u| u.name == user.name) {
                    return Err(ControlError::DuplicateUser(user.name.clone()));
                }
                check_new_name(NameKind::User, &user.name)?;
                admin.users.push(user.clone());
            }
            Command::RemoveUser { name } => {
                let users = config.admin.as_mut().map(|a| &mut a.users);
                let Some(users) = users.filter(|u| u.iter().any(|u| &u.name == name)) else {
                    return Err(ControlError::UnknownUser(name.clone()));
                };
                users.retain(|u| &u.name != name);
            }
        }
        Ok(())
    }
}

fn service_mut<'a>(
    config: &'a mut Config,
    name: &str,
) -> Result<&'a mut ServiceConfig, ControlError> {
    config
        .services
        .iter_mut()
        .find(|s| s.name == name)
        .ok_or_else(|| ControlError::UnknownService(name.to_string()))
}

fn group_index(service: &ServiceConfig, group: &str) -> Result<usize, ControlError> {
    service
        .groups
        .iter()
        .position(|g| g.name == group)
        .ok_or_else(|| ControlError::UnknownGroup {
            service: service.name.clone(),
            group: group.to_string(),
        })
}

fn group_mut<'a>(
    config: &'a mut Config,
    service: &str,
    group: &str,
) -> Result<&'a mut GroupConfig, ControlError> {
    let s = service_mut(config, service)?;
    let index = group_index(s, group)?;
    Ok(&mut s.groups[index])
}

fn refuse_enabled(service: &ServiceConfig, group: &str) -> Result<(), ControlError> {
    if service.enabled_group == group {
        return Err(ControlError::GroupIsEnabled {
            service: service.name.clone(),
            group: group.to_string(),
        });
    }
    Ok(())
}

fn check_weight(host: &HostConfig) -> Result<(), ControlError> {
    if host.weight == 0 {
        return Err(ControlError::Invalid(format!(
            "host {:?}: weight must be at least 1",
            host.name
        )));
    }
    Ok(())
}

/// A name the command brings in, by the one name rule the files follow.
fn check_new_name(kind: NameKind, name: &str) -> Result<(), ControlError> {
    check_name(kind, name)
        .map_err(|why| ControlError::Invalid(format!("bad {} name {name:?}: {why}", kind.word())))
}

/// A host the command brings in: its name, its address (by the rule of the
/// files' `ip`, whether it was parsed or built in code) and its weight.
fn check_host(host: &HostConfig) -> Result<(), ControlError> {
    check_new_name(NameKind::Host, &host.name)?;
    let written = host.address.to_string();
    if parse_host_address(&written).as_ref() != Ok(&host.address) {
        let why = parse_host_address(&written)
            .err()
            .unwrap_or_else(|| "not as it would be read back".to_string());
        return Err(ControlError::Invalid(format!(
            "host {:?}: bad address {written:?}: {why}",
            host.name
        )));
    }
    check_weight(host)
}

/// Every name and host address of a whole configuration (a reload or an
/// embedding application's): files were checked when read, configurations
/// built in code are held to the same rule.
fn check_names(config: &Config) -> Result<(), ControlError> {
    for service in &config.services {
        check_new_name(NameKind::Service, &service.name)?;
        for group in &service.groups {
            check_new_name(NameKind::Group, &group.name)?;
            for host in &group.hosts {
                check_host(host)?;
            }
        }
    }
    for user in config.admin.iter().flat_map(|a| &a.users) {
        check_new_name(NameKind::User, &user.name)?;
    }
    Ok(())
}

fn check_group(service: &str, group: &GroupConfig) -> Result<(), ControlError> {
    check_new_name(NameKind::Group, &group.name)?;
    let mut names = HashSet::new();
    for host in &group.hosts {
        if !names.insert(&host.name) {
            return Err(ControlError::DuplicateHost {
                service: service.to_string(),
                group: group.name.clone(),
                host: host.name.clone(),
            });
        }
        check_host(host)?;
    }
    Ok(())
}

fn check_service(service: &ServiceConfig) -> Result<(), ControlError> {
    check_new_name(NameKind::Service, &service.name)?;
    if service.listeners.is_empty() {
        return Err(ControlError::Invalid(format!(
            "service {:?} has no listener",
            service.name
        )));
    }
    let mut names = HashSet::new();
    for group in &service.groups {
        if !names.insert(&group.name) {
            return Err(ControlError::DuplicateGroup {
                service: service.name.clone(),
                group: group.name.clone(),
            });
        }
        check_group(&service.name, group)?;
    }
    group_index(service, &service.enabled_group)?;
    refuse_backup_enabled(service)
}

/// The files refuse an enabled backup group; configurations built in code are
/// held to the same rule.
fn refuse_backup_enabled(service: &ServiceConfig) -> Result<(), ControlError> {
    match service
        .groups
        .iter()
        .find(|g| g.name == service.enabled_group)
    {
        Some(group) if group.options.backup => Err(ControlError::BackupGroupEnabled {
            service: service.name.clone(),
            group: group.name.clone(),
        }),
        _ => Ok(()),
    }
}
