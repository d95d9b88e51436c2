//! Every reply ftpd sends, by name: the code and vsftpd's text in one place,
//! so a text that clients (and the differential test) compare byte for byte
//! is typed once. Low layer: no session, server or handler imports.

/// A fixed reply: code and text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// RFC 959 reply code.
    pub code: u16,
    /// The text after the code, as vsftpd words it where vsftpd has the reply.
    pub text: &'static str,
}

/// Reply codes for replies whose text is built at run time (RFC 959 §4.2,
/// RFC 2428, RFC 3659, RFC 4217).
pub mod code {
    /// Opening the data connection.
    pub const OPENING_DATA: u16 = 150;
    /// Command okay.
    pub const OK: u16 = 200;
    /// System status or help reply (STAT, FEAT).
    pub const SYSTEM_STATUS: u16 = 211;
    /// File status (SIZE, MDTM, STAT PATH, HASH).
    pub const FILE_STATUS: u16 = 213;
    /// Help message.
    pub const HELP: u16 = 214;
    /// Service ready for a new user (the greeting).
    pub const READY: u16 = 220;
    /// Entering passive mode.
    pub const PASSIVE: u16 = 227;
    /// Entering extended passive mode (RFC 2428).
    pub const EXTENDED_PASSIVE: u16 = 229;
    /// User logged in.
    pub const LOGGED_IN: u16 = 230;
    /// Requested file action okay, completed.
    pub const FILE_ACTION_OK: u16 = 250;
    /// Pathname created (and PWD).
    pub const PATH_CREATED: u16 = 257;
    /// Requested file action pending further information (REST).
    pub const PENDING: u16 = 350;
    /// Service not available, closing the control connection.
    pub const CLOSING: u16 = 421;
    /// Syntax error or unsupported network protocol (RFC 2428).
    pub const BAD_PROTOCOL: u16 = 522;
    /// Not logged in.
    pub const NOT_LOGGED_IN: u16 = 530;
}

macro_rules! replies {
    ($($(#[$doc:meta])* $name:ident = $code:literal $text:literal;)*) => {
        $($(#[$doc])* pub const $name: Reply = Reply { code: $code, text: $text };)*
        #[cfg(test)]
        const ALL: &[Reply] = &[$($name),*];
    };
}

replies! {
    LISTING_FOLLOWS = 150 "Here comes the directory listing.";
    SEND_DATA = 150 "Ok to send data.";
    UTF8_OK = 200 "Always in UTF8 mode.";
    CCC_OK = 200 "Control connection now in clear text.";
    EPRT_OK = 200 "EPRT command successful. Consider using EPSV.";
    EPSV_ALL_OK = 200 "EPSV ALL ok.";
    MLST_OPTS = 200 "MLST OPTS type;size;modify;perm;unique;";
    MODE_OK = 200 "Mode set to S.";
    NOOP_OK = 200 "NOOP ok.";
    PBSZ_OK = 200 "PBSZ set to 0.";
    PORT_OK = 200 "PORT command successful. Consider using PASV.";
    PROT_CLEAR = 200 "PROT now Clear.";
    PROT_PRIVATE = 200 "PROT now Private.";
    SITE_CHMOD_OK = 200 "SITE CHMOD command ok.";
    STRU_OK = 200 "Structure set to F.";
    TYPE_ASCII = 200 "Switching to ASCII mode.";
    TYPE_BINARY = 200 "Switching to Binary mode.";
    ALLO_IGNORED = 202 "ALLO command ignored.";
    MDTM_SET_OK = 213 "File modification time set.";
    SITE_HELP = 214 "CHMOD UMASK HELP";
    SYST = 215 "UNIX Type: L8";
    HOST_OK = 220 "Host accepted.";
    GOODBYE = 221 "Goodbye.";
    ABOR_BEFORE_DATA = 225 "ABOR successful.";
    NO_TRANSFER_TO_ABOR = 225 "No transfer to ABOR.";
    ABOR_OK = 226 "ABOR successful.";
    LISTING_OK = 226 "Directory send OK.";
    TRANSFER_OK = 226 "Transfer complete.";
    LISTING_DONE_UNREADABLE = 226 "Transfer done (but failed to open directory).";
    ALREADY_LOGGED_IN = 230 "Already logged in.";
    AUTH_OK = 234 "Proceed with negotiation.";
    DELE_OK = 250 "Delete operation successful.";
    RMD_OK = 250 "Remove directory operation successful.";
    RENAME_OK = 250 "Rename successful.";
    NEED_PASSWORD = 331 "Please specify the password.";
    RNFR_OK = 350 "Ready for RNTO.";
    DATA_TIMEOUT = 421 "Data timeout. Reconnect. Sorry.";
    IDLE_TIMEOUT = 421 "Timeout.";
    /// The session's file worker died (killed, or by its seccomp filter).
    LOST_FILE_ACCESS = 421 "Service not available: this session lost its file access; log in again.";
    PASV_FAILED = 425 "Failed to enter passive mode.";
    DATA_CONNECT_FAILED = 425 "Failed to establish connection.";
    BAD_IP_CONNECTING = 425 "Security: Bad IP connecting.";
    NO_DATA_SETUP = 425 "Use PORT or PASV first.";
    NETWORK_READ_FAILED = 426 "Failure reading network stream.";
    NETWORK_WRITE_FAILED = 426 "Failure writing network stream.";
    /// HASH refused while this address (or the server) hashes as many files
    /// as it may at once: a transient reply, clients try again.
    HASH_BUSY = 450 "Too many HASH commands running, try again later.";
    DIRECTORY_READ_FAILED = 451 "Failure reading directory.";
    FILE_READ_FAILED = 451 "Failure reading local file.";
    FILE_WRITE_FAILED = 451 "Failure writing to local file.";
    TOO_MANY_LISTINGS = 451 "Too many directory listings from your address; try again later.";
    BAD_EPRT_COMMAND = 500 "Bad EPRT command.";
    BAD_EPRT_PROTOCOL = 500 "Bad EPRT protocol.";
    ILLEGAL_EPRT_COMMAND = 500 "Illegal EPRT command.";
    ILLEGAL_PORT_COMMAND = 500 "Illegal PORT command.";
    LINE_TOO_LONG = 500 "Input line too long.";
    UNKNOWN_SITE_COMMAND = 500 "Unknown SITE command.";
    UNKNOWN_COMMAND = 500 "Unknown command.";
    BAD_TYPE = 500 "Unrecognised TYPE command.";
    BAD_UMASK_VALUE = 501 "Bad UMASK value.";
    HOST_NEEDS_NAME = 501 "HOST needs a host name.";
    NUL_IN_COMMAND = 501 "NUL byte in command.";
    /// draft-bryan-ftpext-hash's words.
    HASH_UNKNOWN_ALGORITHM = 501 "Unknown algorithm, current selection not changed";
    /// HASH ended by ABOR; the ABOR gets its own reply.
    HASH_ABORTED = 451 "Hash aborted.";
    OPTION_NOT_UNDERSTOOD = 501 "Option not understood.";
    SITE_CHMOD_USAGE = 501 "SITE CHMOD needs <mode> <file>.";
    MFMT_USAGE = 501 "MFMT needs YYYYMMDDHHMMSS and a file.";
    ACCT_NOT_IMPLEMENTED = 502 "ACCT not implemented.";
    REIN_NOT_IMPLEMENTED = 502 "REIN not implemented.";
    SMNT_NOT_IMPLEMENTED = 502 "SMNT not implemented.";
    HOST_AFTER_USER = 503 "HOST must come before USER.";
    LOGIN_WITH_USER_FIRST = 503 "Login with USER first.";
    PBSZ_NEEDS_TLS = 503 "PBSZ needs a secure connection.";
    PROT_NEEDS_TLS = 503 "PROT needs a secure connection.";
    RNFR_REQUIRED_FIRST = 503 "RNFR required first.";
    BAD_MODE = 504 "Bad MODE command.";
    BAD_STRU = 504 "Bad STRU command.";
    PROT_UNKNOWN = 504 "PROT not recognized.";
    BAD_AUTH_TYPE = 504 "Unknown AUTH type.";
    DATA_MUST_BE_ENCRYPTED = 522 "Data connections must be encrypted.";
    PASV_NEEDS_IPV4 = 522 "Network protocol not supported, use EPSV (2).";
    DATA_TLS_FAILED = 522 "SSL connection failed";
    ANON_NO_TLS = 530 "Anonymous sessions may not use encryption.";
    LOGIN_INCORRECT = 530 "Login incorrect.";
    /// vsftpd calls anonymous sessions "guest" ones here.
    GUEST_CANNOT_CHANGE = 530 "Can't change from guest user.";
    CANNOT_CHANGE_USER = 530 "Can't change to another user.";
    LOCAL_MUST_ENCRYPT = 530 "Non-anonymous sessions must use encryption.";
    EPSV_THROUGH_BALANCER = 502 "EPSV would reach the load balancer, not this server; use PASV.";
    ANON_MUST_ENCRYPT = 530 "Anonymous sessions must use encryption.";
    ANON_ONLY = 530 "This FTP server is anonymous only.";
    LOGIN_FIRST = 530 "Please login with USER and PASS.";
    CCC_BEFORE_LOGIN = 533 "CCC is only allowed after login.";
    CCC_NEEDS_TLS = 533 "CCC needs a secure connection.";
    PROT_UNSUPPORTED = 536 "PROT not supported.";
    MDTM_FAILED = 550 "Could not get file modification time.";
    SIZE_FAILED = 550 "Could not get file size.";
    MLST_FAILED = 550 "Could not list that path.";
    MDTM_SET_FAILED = 550 "Could not set file modification time.";
    MKD_FAILED = 550 "Create directory operation failed.";
    DELE_FAILED = 550 "Delete operation failed.";
    CWD_FAILED = 550 "Failed to change directory.";
    MLSD_FAILED = 550 "Failed to open directory.";
    FAILED_TO_OPEN_FILE = 550 "Failed to open file.";
    PERMISSION_DENIED = 550 "Permission denied.";
    RNFR_FAILED = 550 "RNFR command failed.";
    RMD_FAILED = 550 "Remove directory operation failed.";
    RENAME_FAILED = 550 "Rename failed.";
    SITE_CHMOD_FAILED = 550 "SITE CHMOD command failed.";
    NO_SPACE = 552 "Requested file action aborted: out of disk space or over quota.";
    COULD_NOT_CREATE_FILE = 553 "Could not create file.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_ftp_codes_and_texts_one_line() {
        for r in ALL {
            assert!((100..600).contains(&r.code), "{r:?}");
            assert!(!r.text.contains(['\r', '\n']), "{r:?}");
        }
    }

    #[test]
    fn each_text_is_named_once_per_code() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(!ALL[i + 1..].contains(a), "{a:?} is named twice");
        }
    }
}
