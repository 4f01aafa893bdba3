#!/usr/bin/python3
"""A real SAML 2.0 identity provider for tests (pysaml2, Debian's python3-pysaml2).

Started by the SAML tests: it makes its own signing key and certificate (openssl), writes its
metadata to DIR/idp-metadata.xml, then serves on 127.0.0.1:PORT (0 = any free port)

  GET /sso/redirect?SAMLRequest=..&RelayState=..[&user=..][&groups=a,b][&mode=..]

which parses the SP's AuthnRequest (HTTP-Redirect binding), "authenticates" the user without
asking (auto-consent) and answers with the usual auto-submitting HTML form that POSTs the
signed Response to the SP's AssertionConsumerService (HTTP-POST binding).

The SP's metadata is read from --sp-metadata at each request (the SP may start after us).
`mode` makes a bad response on purpose, for the SP's refusal tests:
  ok (default)     response and assertion signed
  unsigned         nothing signed
  tampered         signed, then a group value changed (the signature no longer matches)
  assertion_only   only the assertion signed (many IdPs do this): valid
  assertion_only_tampered  only the assertion signed, then a group value changed
  wrong_audience   signed, audience is another SP
  expired          signed, NotOnOrAfter in the past
  wrong_request    signed, InResponseTo names a request the SP never made
  other_key        signed with a key that is not the one in the metadata

Prints "READY <port>" on stdout once listening.
"""
import argparse
import base64
import html
import http.server
import os
import subprocess
import sys
import urllib.parse

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml
from saml2.assertion import Policy
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
from saml2.server import Server
from saml2.saml import AUTHN_PASSWORD

ARGS = None
BASE_URL = None


def make_key(dirname, name):
    key = os.path.join(dirname, name + '.key')
    cert = os.path.join(dirname, name + '.crt')
    if not os.path.exists(cert):
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
                        '-subj', '/CN=pgwarden-test-' + name, '-keyout', key, '-out', cert],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return key, cert


def idp_config(key, cert, with_sp=True):
    conf = {
        'entityid': ARGS.entity_id,
        'service': {'idp': {
            'endpoints': {'single_sign_on_service': [(BASE_URL + '/sso/redirect',
                                                      BINDING_HTTP_REDIRECT)]},
            'policy': {'default': {'lifetime': {'minutes': 5}, 'attribute_restrictions': None,
                                   'name_form': 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic'}},
            'name_id_format': [NAMEID_FORMAT_PERSISTENT],
        }},
        'key_file': key, 'cert_file': cert,
        'xmlsec_binary': '/usr/bin/xmlsec1',
        'allow_unknown_attributes': True,
        'metadata': {'local': [ARGS.sp_metadata]} if with_sp else {},
    }
    cfg = IdPConfig()
    cfg.load(conf)
    return cfg


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write('saml_idp: ' + (fmt % args) + '\n')

    def reply(self, code, body, ctype='text/plain'):
        data = body.encode()
        self.send_response(code)
        self.send_header('Content-Type', ctype + '; charset=utf-8')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == '/metadata':
            with open(os.path.join(ARGS.dir, 'idp-metadata.xml')) as f:
                return self.reply(200, f.read(), 'application/samlmetadata+xml')
        if url.path != '/sso/redirect' or 'SAMLRequest' not in q:
            return self.reply(404, 'not found')
        try:
            self.reply(200, respond(q), 'text/html')
        except Exception as e:  # a test IdP: say what went wrong
            self.reply(400, 'saml_idp error: %r' % e)


def respond(q):
    mode = q.get('mode', ARGS.mode)
    user = q.get('user', ARGS.user)
    groups = [g for g in q.get('groups', ARGS.groups).split(',') if g]
    key, cert = (make_key(ARGS.dir, 'other') if mode == 'other_key'
                 else (os.path.join(ARGS.dir, 'idp.key'), os.path.join(ARGS.dir, 'idp.crt')))
    idp = Server(config=idp_config(key, cert))
    req = idp.parse_authn_request(q['SAMLRequest'], BINDING_HTTP_REDIRECT)
    msg = req.message
    sp_entity = msg.issuer.text
    acs = msg.assertion_consumer_service_url
    if not acs:
        acs = idp.metadata.assertion_consumer_service(sp_entity, BINDING_HTTP_POST)[0]['location']
    in_response_to = '_never_requested' if mode == 'wrong_request' else msg.id

    saved_conditions = Policy.conditions
    saved_lifetime = Policy.get_lifetime
    if mode == 'wrong_audience':
        def conditions(self, sp_entity_id):
            return saved_conditions(self, 'https://other-sp.example/saml')
        Policy.conditions = conditions
    if mode == 'expired':
        Policy.get_lifetime = lambda self, sp: {'minutes': -10}
    try:
        signed = mode != 'unsigned'
        assertion_only = mode.startswith('assertion_only')
        resp = idp.create_authn_response(
            {'groups': groups, 'mail': [user + '@example.test']}, in_response_to, acs, sp_entity,
            name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=user),
            authn={'class_ref': AUTHN_PASSWORD}, sign_response=signed and not assertion_only,
            sign_assertion=signed)
    finally:
        Policy.conditions = saved_conditions
        Policy.get_lifetime = saved_lifetime
    xml = str(resp)
    if mode in ('tampered', 'assertion_only_tampered'):
        if not groups:
            raise ValueError('tampered needs a group to change')
        xml = xml.replace('>' + groups[0] + '<', '>pgw-admins<', 1)
    b64 = base64.b64encode(xml.encode()).decode()
    relay = q.get('RelayState', '')
    return ('<!DOCTYPE html><html><head><title>pgwarden test IdP</title></head>'
            '<body onload="document.forms[0].submit()">'
            '<form method="post" action="%s">'
            '<input type="hidden" name="SAMLResponse" value="%s">'
            '<input type="hidden" name="RelayState" value="%s">'
            '<noscript><button type="submit">Continue</button></noscript>'
            '</form></body></html>') % (html.escape(acs), b64, html.escape(relay))


def main():
    global ARGS, BASE_URL
    p = argparse.ArgumentParser()
    p.add_argument('--dir', required=True)
    p.add_argument('--port', type=int, default=0)
    p.add_argument('--sp-metadata', required=True)
    p.add_argument('--entity-id', default='https://idp.test/saml')
    p.add_argument('--user', default='alice')
    p.add_argument('--groups', default='pgw-reviewers')
    p.add_argument('--mode', default='ok')
    ARGS = p.parse_args()
    httpd = http.server.HTTPServer(('127.0.0.1', ARGS.port), Handler)
    BASE_URL = 'http://127.0.0.1:%d' % httpd.server_address[1]
    key, cert = make_key(ARGS.dir, 'idp')
    with open(os.path.join(ARGS.dir, 'idp-metadata.xml'), 'w') as f:
        f.write(create_metadata_string(None, config=idp_config(key, cert, with_sp=False),
                                       valid=48).decode())
    print('READY %d' % httpd.server_address[1], flush=True)
    httpd.serve_forever()


if __name__ == '__main__':
    main()
