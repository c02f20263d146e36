"""trackmilter: honest email status tracking as a Postfix/Sendmail milter."""

__version__ = "0.1.0"
