//! Commands: every change to the running balancer, whatever asked for it (reload,
//! web, API, SSH, embedding handle), and how each edits the configuration model.

use crate::config::{
    AdminConfig, CheckError, Config, GroupConfig, HostAddress, HostConfig, ListenAddr, Listener,
    Route, Rule, ServiceConfig, UserConfig,
};
use crate::scheduler::SchedulerKind;

use super::ControlError;

/// One change to the running balancer.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Replace the whole configuration (SIGHUP reload). Hosts that stay (by
    /// name, or renamed at the same address) keep their counters and
    /// connections; see `control/build.rs`.
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
    /// Add a route to a listener: at `position` (0 is first), or last.
    AddRoute {
        /// Service of the listener.
        service: String,
        /// The listener's address as configured.
        listen: ListenAddr,
        /// The new route.
        route: Route,
        /// Where among the listener's routes (order decides: the first match
        /// wins); `None`: after the others.
        position: Option<usize>,
    },
    /// Remove a listener's route: the first equal to `route`.
    RemoveRoute {
        /// Service of the listener.
        service: String,
        /// The listener's address as configured.
        listen: ListenAddr,
        /// The route to remove (its conditions and service).
        route: Route,
    },
    /// Add a group to a service.
    AddGroup {
        /// Service name.
        service: String,
        /// The new group (may already have hosts).
        group: Box<GroupConfig>,
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
    /// Serve another certificate and key (PEM files) in place of a
    /// terminating listener's certificate number `index` (from 0). The files
    /// are read as at every change of a listener's TLS; one that does not
    /// load refuses the command and the running certificate stays.
    SetListenerCert {
        /// Service name.
        service: String,
        /// The listener, as configured.
        listen: ListenAddr,
        /// Which of its certificates (configuration order, from 0).
        index: usize,
        /// The certificate chain.
        cert: std::path::PathBuf,
        /// Its private key.
        key: std::path::PathBuf,
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

    /// Applies the command to a copy of the running configuration, checking
    /// by the model's rules ([`Config::check`] and the checks it is made of)
    /// only what the command changes: a `Replace` is checked whole, an added
    /// host alone (and its name against its group's), never the rest.
    /// Runtime-only changes (admin-down) leave it untouched; the controller
    /// handles them.
    pub(crate) fn edit(&self, config: &mut Config) -> Result<(), ControlError> {
        match self {
            Command::Replace(new) => {
                new.check()?;
                let source = config.source.clone();
                *config = (**new).clone();
                if config.source.is_none() {
                    config.source = source;
                }
            }
            Command::AddService(service) => {
                config.check_new_service(service)?;
                config.services.push((**service).clone());
            }
            Command::RemoveService { service } => {
                config.check_unrouted(service)?;
                let before = config.services.len();
                config.services.retain(|s| &s.name != service);
                if config.services.len() == before {
                    return Err(ControlError::UnknownService(service.clone()));
                }
            }
            Command::AddListener { service, listen } => {
                service_mut(config, service)?;
                config.check_listener(service, listen)?;
                config.check_listen_free(&listen.addr)?;
                service_mut(config, service)?.listeners.push(listen.clone());
            }
            Command::SetListenerCert {
                service,
                listen,
                index,
                cert,
                key,
            } => {
                let listener = listener_mut(config, service, listen)?;
                let Some(pair) = listener
                    .tls
                    .as_mut()
                    .and_then(|tls| tls.certs.get_mut(*index))
                else {
                    return Err(ControlError::Invalid(format!(
                        "service {service:?}, listener {listen}: no certificate number {index} (expected a terminating listener's, counted from 0)"
                    )));
                };
                *pair = crate::config::TlsCert::new(cert, key);
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
            Command::AddRoute {
                service,
                listen,
                route,
                position,
            } => {
                let listener = listener_mut(config, service, listen)?;
                let at = position
                    .unwrap_or(listener.routes.len())
                    .min(listener.routes.len());
                listener.routes.insert(at, route.clone());
                let listener = listener.clone();
                config.check_listener(service, &listener)?;
            }
            Command::RemoveRoute {
                service,
                listen,
                route,
            } => {
                let routes = &mut listener_mut(config, service, listen)?.routes;
                let at = routes.iter().position(|r| r == route).ok_or_else(|| {
                    ControlError::UnknownRoute {
                        service: service.clone(),
                        listen: listen.to_string(),
                        route: route.to_string(),
                    }
                })?;
                routes.remove(at);
                // A service without groups must keep a route on each listener.
                service_mut(config, service)?.check()?;
            }
            Command::AddGroup { service, group } => {
                let s = service_mut(config, service)?;
                if s.groups.iter().any(|g| g.name == group.name) {
                    return Err(ControlError::DuplicateGroup {
                        service: service.clone(),
                        group: group.name.clone(),
                    });
                }
                group
                    .check(service)
                    .map_err(|e| e.within(|| format!("service {service:?}")))?;
                s.groups.push((**group).clone());
            }
            Command::RemoveGroup { service, group } => {
                let s = service_mut(config, service)?;
                refuse_enabled(s, group)?;
                let index = group_index(s, group)?;
                s.groups.remove(index);
            }
            Command::EnableGroup { service, group } => {
                let s = service_mut(config, service)?;
                s.enabled_group = group.clone();
                s.check_enabled()?;
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
                if g.hosts.contains_name(&host.name) {
                    return Err(ControlError::DuplicateHost {
                        service: service.clone(),
                        group: group.clone(),
                        host: host.name.clone(),
                    });
                }
                host.check()
                    .map_err(|e| e.within(|| format!("group {group:?} of service {service:?}")))?;
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
                    .position(host)
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
                user.check()?;
                admin.users.push(user.clone());
            }
            Command::RemoveUser { name } => {
                let users = config.admin.as_mut().map(|a| &mut a.users);
                let Some(users) = users.filter(|u| u.iter().any(|u| &u.name == name)) else {
                    return Err(ControlError::UnknownUser(name.clone()));
                };
                let full = |u: &&crate::config::UserConfig| u.access == crate::config::Access::Full;
                if users.iter().filter(full).all(|u| &u.name == name)
                    && users.iter().any(|u| &u.name == name && full(&u))
                {
                    return Err(ControlError::LastFullUser(name.clone()));
                }
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

fn listener_mut<'a>(
    config: &'a mut Config,
    service: &str,
    listen: &ListenAddr,
) -> Result<&'a mut Listener, ControlError> {
    service_mut(config, service)?
        .listeners
        .iter_mut()
        .find(|l| l.addr == *listen)
        .ok_or_else(|| ControlError::UnknownListener {
            service: service.to_string(),
            listen: listen.to_string(),
        })
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

/// A broken rule of the model, as the controller's error: the rules that
/// commands also break by name keep their own variants.
impl From<CheckError> for ControlError {
    fn from(error: CheckError) -> Self {
        match error.rule().clone() {
            Rule::DuplicateService(service) => ControlError::DuplicateService(service),
            Rule::DuplicateGroup { service, group } => {
                ControlError::DuplicateGroup { service, group }
            }
            Rule::DuplicateHost {
                service,
                group,
                host,
            } => ControlError::DuplicateHost {
                service,
                group,
                host,
            },
            Rule::DuplicateUser(user) => ControlError::DuplicateUser(user),
            Rule::UnknownService(service) => ControlError::UnknownService(service),
            Rule::UnknownEnabledGroup { service, group } => {
                ControlError::UnknownGroup { service, group }
            }
            Rule::BackupEnabled { service, group } => {
                ControlError::BackupGroupEnabled { service, group }
            }
            Rule::EnabledGroupEmpty { service, group } => {
                ControlError::EmptyGroup { service, group }
            }
            Rule::ListenerInUse {
                listen,
                service: Some(service),
            } => ControlError::DuplicateListener { service, listen },
            Rule::ListenerInUse { service: None, .. } | Rule::Value => {
                ControlError::Invalid(error.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Access, parse_listen_addr};

    fn running() -> Config {
        Config::from_xml_str(
            r#"<config>
  <service name="svc">
    <listen ip="127.0.0.1:7000"/>
    <group name="g" enable="true"><host name="a" ip="127.0.0.1:9"/></group>
    <group name="spare" backup="true"><host name="b" ip="127.0.0.1:9"/></group>
  </service>
  <admin><web listen="127.0.0.1:7001"/></admin>
</config>"#,
        )
        .unwrap()
    }

    fn host(name: &str) -> HostConfig {
        HostConfig {
            name: name.into(),
            address: crate::config::parse_host_address("127.0.0.1:9").unwrap(),
            weight: 1,
            options: Default::default(),
        }
    }

    fn refused(command: Command) -> ControlError {
        command.edit(&mut running()).unwrap_err()
    }

    /// The last user with full access stays: removing it would leave
    /// nobody able to change anything through the web. Read-only users, and
    /// full ones while another remains, go.
    #[test]
    fn the_last_full_user_cannot_be_removed() {
        let user = |name: &str, access| crate::config::UserConfig {
            name: name.into(),
            password_hash: "$6$x$y".into(),
            access,
        };
        let mut config = running();
        for u in [
            user("root", Access::Full),
            user("ops", Access::Full),
            user("view", Access::ReadOnly),
        ] {
            Command::AddUser(u).edit(&mut config).unwrap();
        }
        let remove = |name: &str| Command::RemoveUser { name: name.into() };
        remove("view").edit(&mut config).unwrap();
        remove("ops").edit(&mut config).unwrap();
        let e = remove("root").edit(&mut config).unwrap_err();
        assert!(matches!(e, ControlError::LastFullUser(_)), "{e:?}");
        assert!(e.to_string().contains("last with full access"), "{e}");
    }

    #[test]
    fn commands_are_held_to_the_model_rules_in_words() {
        let e = refused(Command::AddHost {
            service: "svc".into(),
            group: "g".into(),
            host: host("x\u{1b}"),
        });
        assert!(matches!(e, ControlError::Invalid(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("group \"g\" of service \"svc\": bad host name"),
            "{e}"
        );
        let e = refused(Command::AddHost {
            service: "svc".into(),
            group: "g".into(),
            host: host("a"),
        });
        assert!(matches!(e, ControlError::DuplicateHost { .. }), "{e:?}");
        let e = refused(Command::AddListener {
            service: "svc".into(),
            listen: parse_listen_addr("127.0.0.1:7001").unwrap().into(),
        });
        assert!(e.to_string().contains("the admin web server"), "{e}");
        let e = refused(Command::AddListener {
            service: "svc".into(),
            listen: parse_listen_addr("127.0.0.1:7000").unwrap().into(),
        });
        assert!(matches!(e, ControlError::DuplicateListener { .. }), "{e:?}");
        let e = refused(Command::EnableGroup {
            service: "svc".into(),
            group: "spare".into(),
        });
        assert!(
            matches!(e, ControlError::BackupGroupEnabled { .. }),
            "{e:?}"
        );
        let e = refused(Command::EnableGroup {
            service: "svc".into(),
            group: "nope".into(),
        });
        assert!(matches!(e, ControlError::UnknownGroup { .. }), "{e:?}");
        let mut twin = running().services[0].clone();
        twin.name = "other".into();
        let e = refused(Command::AddService(Box::new(twin)));
        assert!(matches!(e, ControlError::DuplicateListener { .. }), "{e:?}");
    }

    #[test]
    fn a_replace_is_checked_whole() {
        let mut next = running();
        let twin = next.services[0].groups[1].hosts[0].clone();
        next.services[0].groups[1].hosts.push(twin);
        let e = refused(Command::Replace(Box::new(next)));
        assert!(matches!(e, ControlError::DuplicateHost { .. }), "{e:?}");
        let mut next = running();
        next.admin.as_mut().unwrap().web.as_mut().unwrap().listen =
            parse_listen_addr("127.0.0.1:7000").unwrap();
        let e = refused(Command::Replace(Box::new(next)));
        assert!(matches!(e, ControlError::DuplicateListener { .. }), "{e:?}");
        let mut config = running();
        Command::Replace(Box::new(running()))
            .edit(&mut config)
            .unwrap();
    }
}
