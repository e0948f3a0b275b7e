//! How a recording ends: why tracing stopped, and how a launched command
//! exited.

use std::fmt;

/// Why tracing stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoppedBy {
    /// The launched command exited.
    CommandExit,
    /// Every `--pid`/`--comm` process exited.
    TargetExit,
    /// `--duration` ran out.
    Duration,
    Sigint,
    Sigterm,
    Sighup,
}

impl StoppedBy {
    const ALL: [StoppedBy; 6] = [
        StoppedBy::CommandExit,
        StoppedBy::TargetExit,
        StoppedBy::Duration,
        StoppedBy::Sigint,
        StoppedBy::Sigterm,
        StoppedBy::Sighup,
    ];

    /// The stable name (JSON `stopped_by`).
    pub fn name(self) -> &'static str {
        match self {
            StoppedBy::CommandExit => "command exit",
            StoppedBy::TargetExit => "target exit",
            StoppedBy::Duration => "duration",
            StoppedBy::Sigint => "SIGINT",
            StoppedBy::Sigterm => "SIGTERM",
            StoppedBy::Sighup => "SIGHUP",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        StoppedBy::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for StoppedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for StoppedBy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for StoppedBy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        StoppedBy::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown reason to stop {name:?}")))
    }
}

/// How a waited-for process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + the signal.
    pub fn as_exit_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signal) => 128 + signal,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        if let Some(code) = text.strip_prefix("exited with status ") {
            return code.parse().ok().map(ExitStatus::Code);
        }
        let signal = text.strip_prefix("killed by signal ")?;
        signal.parse().ok().map(ExitStatus::Signal)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exited with status {code}"),
            ExitStatus::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

impl serde::Serialize for ExitStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ExitStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ExitStatus::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown exit status {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for stopped in StoppedBy::ALL {
            assert_eq!(StoppedBy::from_name(stopped.name()), Some(stopped));
        }
        for status in [ExitStatus::Code(3), ExitStatus::Signal(15)] {
            assert_eq!(ExitStatus::parse(&status.to_string()), Some(status));
        }
        assert_eq!(ExitStatus::Signal(15).as_exit_code(), 143);
        assert_eq!(ExitStatus::parse("gone"), None);
    }
}
