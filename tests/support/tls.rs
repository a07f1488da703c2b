//! Throwaway TLS material for tests that need a real TLS server (a broker behind stunnel, a
//! ClickHouse with `https_port`): a CA of the test's own and server certificates it signs for
//! 127.0.0.1 and localhost, made with the `openssl` command line in a directory the test owns.
//! Nothing here is trusted by the system; a test that wants "an untrusted certificate" makes a
//! second CA and points the client at it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A certificate authority made for one test.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA's certificate (PEM): what a client's "CA location" setting points at.
    pub certificate: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

/// A server certificate and its private key (PEM files).
#[derive(Debug, Clone)]
pub struct ServerCertificate {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context(
            "run openssl (Debian package openssl; deploy/local/stack.sh packages installs it)",
        )?;
    if !output.status.success() {
        bail!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

impl TestCa {
    /// A new CA named `name` (EC P-256, valid two days) in `dir/name/`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir)?;
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &format!("/CN=Hunter test CA {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        Ok(TestCa {
            certificate: dir.join("ca.pem"),
            key: dir.join("ca.key"),
            dir,
        })
    }

    /// A server certificate signed by this CA for 127.0.0.1 and localhost (the names clients
    /// verify with librdkafka's and reqwest's default hostname checks).
    pub fn issue_server(&self, name: &str) -> anyhow::Result<ServerCertificate> {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let extensions = format!("{name}.ext");
        std::fs::write(
            self.dir.join(&extensions),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )?;
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=127.0.0.1",
            ],
        )?;
        let ca_key = self.key.display().to_string();
        let ca_pem = self.certificate.display().to_string();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extensions,
            ],
        )?;
        Ok(ServerCertificate {
            certificate: self.dir.join(pem),
            key: self.dir.join(key),
        })
    }
}
