//! `ftpd check-config FILE` on the vsftpd.conf files operators actually have.

use std::process::Command;

use ftpd_tests::{ftpd_bin, workspace};

fn check(file: &std::path::Path) -> (i32, String) {
    let out = Command::new(ftpd_bin()).arg("check-config").arg(file).output().expect("run ftpd check-config");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().expect("exit code"), text)
}

#[test]
fn debian_default_behaves_as_vsftpd() {
    let file = workspace().join("tests/data/debian-vsftpd.conf");
    let (code, text) = check(&file);
    assert_eq!(code, 0, "{text}");
    // Accepted without effect, each on its own line with its line number.
    let line = |name: &str| {
        let text = std::fs::read_to_string(&file).unwrap();
        text.lines().position(|l| l.starts_with(&format!("{name}="))).unwrap() + 1
    };
    let secure = format!("debian-vsftpd.conf:{}: secure_chroot_dir=", line("secure_chroot_dir"));
    assert!(text.lines().any(|l| l.contains(&secure) && l.contains("no effect")), "{text}");
    // FTPS is implemented: the certificate options mean what they mean in vsftpd.
    let rsa = format!("debian-vsftpd.conf:{}: rsa_cert_file=", line("rsa_cert_file"));
    assert!(!text.lines().any(|l| l.contains(&rsa) && l.contains("no effect")), "{text}");
    // Better ftpd options are offered, without counting as a difference.
    assert!(text.contains("pasv_min_port"), "{text}");
    assert!(text.contains("behaves as vsftpd"), "{text}");
}

#[test]
fn tutorial_config_names_the_real_option() {
    let file = workspace().join("tests/data/tutorial-vsftpd.conf");
    let (code, text) = check(&file);
    assert_eq!(code, 1, "{text}");
    let typo = text
        .lines()
        .find(|l| l.contains("tutorial-vsftpd.conf:15: listen_data_port=5020"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(typo.contains("ftp_data_port"), "{typo}");
    assert!(text.contains("ftpd_atomic_uploads=YES"), "{text}");
    assert!(text.contains("ftpd_rate_scope"), "{text}");
    // The passive range is there: no advice to add one.
    assert!(!text.contains("set pasv_min_port"), "{text}");
}

#[test]
fn refused_and_default_differences() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vsftpd.conf");
    std::fs::write(&file, "listen=YES\ntcp_wrappers=YES\nsetproctitle_enable=YES\nssl_enable=YES\n").unwrap();
    let (code, text) = check(&file);
    assert_eq!(code, 1, "{text}");
    assert!(text.lines().any(|l| l.contains(":2: tcp_wrappers=YES") && l.contains("refuses")), "{text}");
    // FTPS works, with one default that differs from vsftpd's.
    assert!(!text.lines().any(|l| l.contains(":4: ssl_enable=YES")), "{text}");
    assert!(text.lines().any(|l| l.contains("strict_ssl_read_eof") && l.contains("differs")), "{text}");
    assert!(text.lines().any(|l| l.contains(":3: setproctitle_enable=YES") && l.contains("no effect")), "{text}");
    // vsftpd's default anonymous_enable is YES, ftpd's NO.
    assert!(text.lines().any(|l| l.contains("anonymous_enable") && l.contains("default")), "{text}");
}

#[test]
fn startup_names_the_closest_option() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vsftpd.conf");
    std::fs::write(&file, "listen=YES\nlisten_data_port=5020\n").unwrap();
    let out = Command::new(ftpd_bin()).arg(&file).arg("-olisten_port=1").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("vsftpd.conf:2:") && err.contains("ftp_data_port"), "{err}");
}
