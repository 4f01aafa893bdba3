"""scripts/conformance client: libpq through its own tools (psql, pgbench). One JSON line per
case; each case is a psql/pgbench run whose output (minus what names the server's host, port,
pid or source location) is the observation."""
import os
import re
import subprocess

from confcommon import CA, DB, FULL, HOST, LARGE_TIMEOUT_S, PASSWORD, PORT, USER, emit

BIN = "/usr/lib/postgresql/15/bin"
TIMEOUT = 180 if FULL else 15


def conninfo(**kw):
    p = dict(host=HOST, port=PORT, user=USER, dbname=DB, sslmode="verify-ca", sslrootcert=CA)
    p.update(kw)
    return " ".join(f"{k}='{v}'" for k, v in p.items())


def clean(text):
    text = re.sub(r"port \d+", "port <port>", text)
    text = re.sub(r"^LOCATION:.*\n", "", text, flags=re.M)
    return text


def notify_check(o):
    # The PID in the notification is the one BackendKeyData gave libpq; `backend` is
    # pg_backend_pid(): they must agree (compared, not shown).
    pids = re.findall(r"server process with PID (\d+)", o["out"])
    backend = re.findall(r"backend (\d+)", o["out"])
    out = re.sub(r"\d{2,}", "<pid>", o["out"])
    return dict(o, out=out, same_pid=bool(pids) and pids == backend * len(pids))


def run(name, args, stdin=None, env=None, timeout=None, check=None, program="psql", raw=False,
        refused=False):
    """refused: the case expects the connection to be refused (a non-zero exit is its pass)."""
    e = dict(os.environ, PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="10")
    e.update(env or {})
    argv = [f"{BIN}/{program}"] + args if program != "sh" else ["sh", "-c", args[0]]
    try:
        p = subprocess.run(argv, input=stdin, capture_output=True, text=not raw, env=e,
                           timeout=timeout or TIMEOUT)
    except subprocess.TimeoutExpired:
        emit(name, False, {"timeout": f"no answer within {timeout or TIMEOUT} s"})
        return
    out, err = (p.stdout, p.stderr) if not raw else (p.stdout.decode(), p.stderr.decode())
    obs = {"rc": p.returncode, "out": clean(out), "err": clean(err)}
    if check is not None:
        obs = check(obs)
    emit(name, (p.returncode == 0) != refused, obs)


def psql(name, sql, *extra, conn=None, **kw):
    run(name, ["-X", "-q", "-v", "VERBOSITY=verbose", "-d", conn or conninfo(), *extra],
        stdin=sql, **kw)


psql("simple.select", "select 1 as a, 'x' as b, null::int as c;\n")
psql("simple.multi_statement_one_query", "select 1 \\; select 2 \\; select 3;\n")
psql("types.text_aligned", open(os.path.join(os.path.dirname(__file__), "types.sql")).read()
     + ";\n", "-x")
psql("error.syntax_verbose", "selec 1;\nselect 1 from from t;\nselect 'abc\n")
psql("error.undefined_and_detail", "select nope from pg_class;\n"
     "do $$ begin raise exception 'custom' using detail = 'd', hint = 'h'; end $$;\n"
     "create temp table t (id int primary key); insert into t values (1); insert into t values (1);\n")
psql("error.on_error_stop", "select 1;\nselect 1/0;\nselect 2;\n", "-v", "ON_ERROR_STOP=1",
     refused=True)  # psql exits 3
psql("error.transaction_aborted", "begin;\nselect 1/0;\nselect 1;\nrollback;\nselect 'after';\n")
psql("empty.queries", ";\n-- comment only\n;\n/* c */;\nselect 'after empty';\n")
psql("notify.pid", "listen conf_psql_chan;\nnotify conf_psql_chan, 'hi';\n"
     "select pg_backend_pid() as pid \\gset\n\\echo backend :pid\n", check=notify_check)
psql("cursor.declare_fetch", "begin;\ndeclare c cursor for select g from generate_series(1,10) g;\n"
     "fetch 3 from c;\nmove 2 in c;\nfetch all from c;\nclose c;\ncommit;\n")
psql("cursor.fetch_count", "\\set FETCH_COUNT 7\nselect g, md5(g::text) from generate_series(1,30) g;\n")
psql("prepared.sql_level", "prepare p(int) as select $1 * 2;\nexecute p(21);\ndeallocate p;\n")
psql("session.set_show", "set datestyle = 'SQL, DMY';\nshow datestyle;\nselect '2024-03-04'::date;\n"
     "reset datestyle;\nshow datestyle;\n")

ROWS = 1000000 if FULL else 10000
for fmt, opt in (("text", ""), ("csv", "with (format csv)"), ("binary", "with (format binary)")):
    psql(f"copy.roundtrip_{fmt}",
         f"create temp table ct (a int, b text, c float8);\n"
         f"copy (select g, 'v' || g || E'\\t,\"', g * 1.5 from generate_series(1, {ROWS}) g) "
         f"to '/dev/null';\n" if False else
         f"create temp table ct (a int, b text, c float8);\n"
         f"\\copy (select g, 'v' || g || E'\\t,\"', g * 1.5 from generate_series(1, {ROWS}) g) "
         f"to '/tmp/conf_psql_{os.getpid()}.{fmt}' {opt}\n"
         f"\\copy ct from '/tmp/conf_psql_{os.getpid()}.{fmt}' {opt}\n"
         f"select count(*), sum(a), md5(string_agg(b || c, ',' order by a)) from ct;\n"
         f"\\! rm -f /tmp/conf_psql_{os.getpid()}.{fmt}\n")
psql("copy.from_stdin_inline", "create temp table ci (a int, b text);\n"
     "copy ci from stdin;\n1\tone\n2\t\\N\n\\.\nselect * from ci;\n"
     "copy ci from stdin (format csv);\n3,\"th,ree\"\nx,bad\n\\.\nselect count(*) from ci;\n")
psql("copy.to_stdout", "copy (select g, g::text from generate_series(1,5) g) to stdout (format csv, header);\n")

psql("startup.pgoptions", "select current_setting('application_name'), current_setting('search_path'),"
     " current_setting('conf.var', true), current_setting('work_mem');\n", "-At",
     env={"PGOPTIONS": "-c search_path=pg_catalog,public -c conf.var=v1 --work_mem=8MB",
          "PGAPPNAME": "conf-psql"})
psql("startup.bad_value", "select 1;\n", env={"PGOPTIONS": "-c work_mem=lots"}, refused=True)
psql("startup.unknown_setting", "select 1;\n", env={"PGOPTIONS": "-c no_such_setting=1"}, refused=True)
psql("startup.client_encoding", "show client_encoding;\nselect 'é';\n",
     env={"PGCLIENTENCODING": "LATIN1"})
psql("auth.wrong_password", "select 1;\n", env={"PGPASSWORD": "wrong-password"},
     check=lambda o: {"rc": o["rc"], "sqlstate_28P01": "28P01" in o["err"],
                      "refused": "FATAL" in o["err"]}, refused=True)
for mode in ("disable", "prefer", "require", "verify-ca"):
    psql(f"tls.{mode}", "select 1;\n\\conninfo\n", "-At", conn=conninfo(sslmode=mode),
         check=lambda o: {"rc": o["rc"], "first": o["out"].split("\n")[0],
                          "ssl": "SSL connection" in o["out"]})
psql("tls.verify_full", "select 1;\n\\conninfo\n", "-At", conn=conninfo(sslmode="verify-full"),
     check=lambda o: {"rc": o["rc"], "first": o["out"].split("\n")[0],
                      "ssl": "SSL connection" in o["out"]})

# pgbench drives libpq's simple, extended and prepared protocols and pipeline mode.
PGB = ["-n", "-t", "20", "-c", "1"]
open(f"/tmp/conf_pgb_{os.getpid()}.sql", "w").write(
    "\\set x random(1, 1000)\nselect :x::int + 1;\nselect repeat('a', :x);\n")
open(f"/tmp/conf_pgbp_{os.getpid()}.sql", "w").write(
    "\\set x random(1, 1000)\n\\startpipeline\nselect :x::int + 1;\nselect 2;\nselect repeat('b', :x);\n"
    "\\endpipeline\n")
for m in ("simple", "extended", "prepared"):
    run(f"pgbench.{m}", PGB + ["-M", m, "-f", f"/tmp/conf_pgb_{os.getpid()}.sql", conninfo()],
        program="pgbench", check=lambda o: {"rc": o["rc"], "processed": re.findall(
            r"number of transactions actually processed: .*", o["out"]), "err": o["err"] if o["rc"] else ""})
for m in ("extended", "prepared"):
    run(f"pgbench.pipeline_{m}", PGB + ["-M", m, "-f", f"/tmp/conf_pgbp_{os.getpid()}.sql",
                                        conninfo()],
        program="pgbench", check=lambda o: {"rc": o["rc"], "processed": re.findall(
            r"number of transactions actually processed: .*", o["out"]), "err": o["err"] if o["rc"] else ""})
os.unlink(f"/tmp/conf_pgb_{os.getpid()}.sql")
os.unlink(f"/tmp/conf_pgbp_{os.getpid()}.sql")

psql("large.result_2mib", "select length(v), md5(v) from (select repeat('x', 2097152) v) s;\n"
     "select repeat('x', 2097152);\n", "-At", timeout=LARGE_TIMEOUT_S,
     check=lambda o: {"rc": o["rc"], "bytes": len(o["out"]), "first": o["out"][:60], "err": o["err"]})
psql("large.query_2mib", "select length('" + "z" * 2097152 + "');\n", "-At", timeout=LARGE_TIMEOUT_S)
if FULL:
    run("large.copy_out_1gb", [f"{BIN}/psql -X -At -d \"{conninfo()}\" -c \"copy (select "
        "repeat('x', 1024 * 1024 * 1023)) to stdout\" | wc -c"], program="sh", timeout=300)
    run("large.result_1gb", [f"{BIN}/psql -X -At -d \"{conninfo()}\" -c \"select "
        "repeat('x', 1024 * 1024 * 1000)\" | wc -c"], program="sh", timeout=300)
