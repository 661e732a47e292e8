//! Binding privileged ports as root, then running as an ordinary user: after every listener
//! is bound and before anything is accepted, the process drops its supplementary groups,
//! then its group, then its user (in that order: after `setuid` it could no longer change
//! groups). glibc applies `setuid`/`setgid` to every thread of the process, so the runtime's
//! worker threads drop with it. The systemd unit's `AmbientCapabilities=CAP_NET_BIND_SERVICE`
//! is the way without root at all.

use anyhow::{Context, bail};
use nix::unistd::{Gid, Group, Uid, User, getegid, geteuid, setgid, setgroups, setuid};

/// Who to run as (`run.user`, `run.group`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunAs {
    /// A user name or numeric id; empty: stay who we are.
    pub user: String,
    /// A group name or numeric id; empty: the user's primary group.
    pub group: String,
}

fn user(name: &str) -> anyhow::Result<User> {
    let found = match name.parse::<u32>() {
        Ok(id) => User::from_uid(Uid::from_raw(id)),
        Err(_) => User::from_name(name),
    };
    found
        .with_context(|| format!("looking up the user {name:?} (run.user)"))?
        .with_context(|| format!("no user {name:?} (run.user)"))
}

fn group(name: &str) -> anyhow::Result<Gid> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(Gid::from_raw(id));
    }
    Ok(Group::from_name(name)
        .with_context(|| format!("looking up the group {name:?} (run.group)"))?
        .with_context(|| format!("no group {name:?} (run.group)"))?
        .gid)
}

/// Drops to `run.user` / `run.group`. Nothing to do when no user is configured. Refuses
/// (rather than carrying on as root) when the drop cannot be done.
pub fn drop_privileges(run: &RunAs) -> anyhow::Result<()> {
    if run.user.is_empty() {
        if geteuid().is_root() {
            tracing::warn!(
                "running as root: set run.user (or use the systemd unit's capabilities)"
            );
        }
        return Ok(());
    }
    let u = user(&run.user)?;
    let gid = if run.group.is_empty() {
        u.gid
    } else {
        group(&run.group)?
    };
    if geteuid() == u.uid && getegid() == gid {
        return Ok(());
    }
    if !geteuid().is_root() {
        bail!(
            "run.user is {:?} but the process is not root and cannot become another user",
            run.user
        );
    }
    setgroups(&[gid]).context("dropping supplementary groups")?;
    setgid(gid).context("setting the group (run.group)")?;
    setuid(u.uid).context("setting the user (run.user)")?;
    if setuid(Uid::from_raw(0)).is_ok() {
        bail!("still able to become root after dropping privileges");
    }
    tracing::info!(user = %u.name, uid = u.uid.as_raw(), gid = gid.as_raw(), "dropped privileges");
    Ok(())
}
