//! Lifecycle hooks (postStart, preStop): exec in the container, sleep, or httpGet against the
//! pod's address.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};

use super::errors::HookError;
use crate::pods::Ctx;

/// Runs hook `hook` of container `c` (id `id`), for at most `timeout`.
pub(super) async fn run(
    ctx: &Ctx,
    id: &str,
    c: &Container,
    pod_ip: &str,
    hook: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), HookError> {
    if let Some(exec) = &hook.exec {
        let argv = exec.command.clone().unwrap_or_default();
        if argv.is_empty() {
            return Err(HookError::NoCommand);
        }
        let out = ctx
            .runtime
            .exec(id, &argv, timeout)
            .await
            .map_err(HookError::Exec)?;
        if out.code != 0 {
            let output =
                String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
            return Err(HookError::ExitCode {
                argv,
                code: out.code,
                output: output.into_owned(),
            });
        }
        return Ok(());
    }
    if let Some(sleep) = &hook.sleep {
        let d = Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout);
        tokio::time::sleep(d).await;
        return Ok(());
    }
    if let Some(h) = &hook.http_get {
        let probe = k8s_openapi::api::core::v1::Probe {
            http_get: Some(h.clone()),
            ..Default::default()
        };
        let noop: bosun_probes::ExecFn =
            Arc::new(|_, _| Box::pin(async { Err("not an exec hook".to_string()) }));
        let spec =
            crate::pods::probing::spec(&probe, c, pod_ip, noop).map_err(HookError::HttpSpec)?;
        let bosun_probes::Check::Http(get) = spec.check else {
            return Err(HookError::NotHttp);
        };
        return match tokio::time::timeout(timeout, bosun_probes::http_get(&get)).await {
            Ok(bosun_probes::Outcome::Success) => Ok(()),
            Ok(bosun_probes::Outcome::Failure(m)) => Err(HookError::Http(m)),
            Err(_) => Err(HookError::HttpTimeout(timeout)),
        };
    }
    if hook.tcp_socket.is_some() {
        return Err(HookError::TcpSocket);
    }
    Err(HookError::NoHandler)
}
