#!/usr/bin/python3
"""
A real SMTP server for the mailer tests: aiosmtpd (Debian's python3-aiosmtpd, so run it with
/usr/bin/python3) storing every accepted message in a Maildir.

  smtp_server.py MAILDIR PORT [--cert C --key K] [--delay SECONDS]

Recipients whose local part starts with "bounce" are refused with 550 at RCPT (a hard
bounce); "defer" with 451 (a temporary failure); at the first RCPT to a "drop" address the
connection is closed with no reply (a server or network that goes away mid-message); later
ones are taken. A recipient whose local part starts with
"later" is accepted at RCPT, but the first message to it gets 451 to its final "." (not stored:
a content check that defers); later ones are taken. With --cert, STARTTLS is offered (and
required before MAIL). --delay waits before answering each DATA, after storing the message (to kill a client
mid-batch).
--auth USER:PASSWORD requires AUTH (PLAIN or LOGIN). Prints "ready" once listening; stops on SIGTERM.
"""
import argparse
import asyncio
import mailbox
import signal
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class MaildirHandler:
    def __init__(self, path, delay):
        self.box = mailbox.Maildir(path, create=True)
        self.delay = delay
        self.deferred_data = set()
        self.dropped = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split('@')[0].lower()
        if local.startswith('bounce'):
            return '550 5.1.1 No such user here'
        if local.startswith('defer'):
            return '451 4.3.0 Try again later'
        if local.startswith('drop') and address not in self.dropped:
            self.dropped.add(address)
            server.transport.close()
            return '421 4.4.2 Connection dropped'
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        later = [a for a in envelope.rcpt_tos if a.split('@')[0].lower().startswith('later')]
        if later and later[0] not in self.deferred_data:
            self.deferred_data.add(later[0])
            return '451 4.7.1 Content check failed temporarily, try again later'
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode('utf-8', 'surrogateescape')
        user = getattr(session, 'auth_data', None)
        user = user.login.decode() if user is not None and hasattr(user, 'login') else '-'
        head = (f'X-Envelope-From: {envelope.mail_from}\r\n'
                f'X-Auth-User: {user}\r\n'
                f'X-Envelope-To: {",".join(envelope.rcpt_tos)}\r\n'
                f'X-Received-At: {time.time():.6f}\r\n'
                f'X-TLS: {"yes" if session.ssl is not None else "no"}\r\n').encode()
        self.box.add(head + data)
        # Stored first, answered later: a client killed while it waits for the reply has
        # delivered the message (the case its exactly-once bookkeeping must get right).
        if self.delay:
            await asyncio.sleep(self.delay)
        return '250 2.0.0 Message accepted for delivery'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('maildir')
    ap.add_argument('port', type=int)
    ap.add_argument('--cert')
    ap.add_argument('--key')
    ap.add_argument('--delay', type=float, default=0)
    ap.add_argument('--auth', help='USER:PASSWORD: AUTH required (after STARTTLS)')
    a = ap.parse_args()
    kw = {}
    if a.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        kw = {'tls_context': ctx, 'require_starttls': True}
    if a.auth:
        want_user, _, want_pw = a.auth.partition(':')

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (getattr(auth_data, 'login', b'') == want_user.encode()
                  and getattr(auth_data, 'password', b'') == want_pw.encode())
            return AuthResult(success=ok, handled=False, auth_data=auth_data)
        kw.update(authenticator=authenticator, auth_required=True, auth_require_tls=bool(a.cert))
    c = Controller(MaildirHandler(a.maildir, a.delay), hostname='127.0.0.1', port=a.port,
                   decode_data=False, **kw)
    c.start()
    print('ready', flush=True)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    while not stop[0]:
        time.sleep(0.1)
    c.stop()
    sys.exit(0)


if __name__ == '__main__':
    main()
