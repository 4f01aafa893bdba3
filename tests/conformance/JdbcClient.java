// scripts/conformance client: pgJDBC (Debian libpostgresql-jdbc-java), run as a single-file
// program (java -cp /usr/share/java/postgresql.jar JdbcClient.java). One JSON line per case.
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;
import org.postgresql.util.PSQLException;
import org.postgresql.util.ServerErrorMessage;

public class JdbcClient {
  static final Map<String, String> ENV = System.getenv();
  static final boolean FULL = "full".equals(ENV.get("CONF_MODE"));
  static final int TIMEOUT_S = FULL ? 180 : 15;
  static final int LARGE_TIMEOUT_S = FULL ? 120 : 3;
  static final ExecutorService POOL = Executors.newCachedThreadPool(r -> {
    Thread t = new Thread(r);
    t.setDaemon(true);
    return t;
  });
  static final List<Connection> OPEN = Collections.synchronizedList(new ArrayList<>());

  interface Body {
    Object[] run() throws Exception;
  } // {Boolean ok, Object obs}

  static String q(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\')
        b.append('\\').append(c);
      else if (c < 0x20)
        b.append(String.format("\\u%04x", (int) c));
      else
        b.append(c);
    }
    return b.append('"').toString();
  }

  static String json(Object o) {
    if (o == null)
      return "null";
    if (o instanceof Boolean || o instanceof Integer || o instanceof Long)
      return o.toString();
    if (o instanceof Map) {
      StringBuilder b = new StringBuilder("{");
      for (Map.Entry<?, ?> e : new TreeMap<>((Map<?, ?>) o).entrySet()) {
        if (b.length() > 1)
          b.append(", ");
        b.append(q(e.getKey().toString())).append(": ").append(json(e.getValue()));
      }
      return b.append('}').toString();
    }
    if (o instanceof List) {
      StringBuilder b = new StringBuilder("[");
      for (Object x : (List<?>) o) {
        if (b.length() > 1)
          b.append(", ");
        b.append(json(x));
      }
      return b.append(']').toString();
    }
    return q(o.toString());
  }

  static Map<String, Object> errorObs(Throwable e) {
    Map<String, Object> m = new LinkedHashMap<>();
    if (e instanceof SQLException)
      m.put("sqlstate", ((SQLException) e).getSQLState());
    if (e instanceof PSQLException && ((PSQLException) e).getServerErrorMessage() != null) {
      ServerErrorMessage s = ((PSQLException) e).getServerErrorMessage();
      m.put("severity", s.getSeverity());
      m.put("message", s.getMessage());
      if (s.getDetail() != null)
        m.put("detail", s.getDetail());
      if (s.getHint() != null)
        m.put("hint", s.getHint());
      if (s.getPosition() != 0)
        m.put("position", s.getPosition());
      if (s.getWhere() != null)
        m.put("where", s.getWhere());
      if (s.getConstraint() != null)
        m.put("constraint", s.getConstraint());
      if (s.getTable() != null)
        m.put("table", s.getTable());
    } else {
      String msg = String.valueOf(e.getMessage());
      m.put("class", e.getClass().getSimpleName());
      m.put("message", msg.replaceAll("port \\d+", "port <port>").split("\n")[0]);
    }
    return m;
  }

  static void runCase(String name, Body body) {
    runCase(name, TIMEOUT_S, false, body);
  }

  static void runCase(String name, int timeoutS, boolean fullOnly, Body body) {
    if (fullOnly && !FULL)
      return;
    OPEN.clear();
    Future<Object[]> f = POOL.submit(body::run);
    Object[] r;
    try {
      r = f.get(timeoutS, TimeUnit.SECONDS);
    } catch (TimeoutException e) {
      f.cancel(true);
      synchronized (OPEN) {
        for (Connection c : OPEN) {
          try {
            c.abort(POOL);
          } catch (Exception ignored) {
          }
        }
      }
      r = new Object[] {false,
          Map.of("thrown", Map.of("message", "timeout: no answer within " + timeoutS + " s"))};
    } catch (ExecutionException e) {
      r = new Object[] {false, Map.of("thrown", errorObs(e.getCause()))};
    } catch (InterruptedException e) {
      r = new Object[] {false, "interrupted"};
    }
    if (ENV.get("CONF_TRACE") != null)
      System.err.println(name + " done at " + System.currentTimeMillis());
    System.out.println(
        "{\"case\": " + q(name) + ", \"ok\": " + r[0] + ", \"obs\": " + json(r[1]) + "}");
    System.out.flush();
  }

  static Connection connect(String extra) throws SQLException {
    String url = "jdbc:postgresql://" + ENV.get("CONF_HOST") + ":" + ENV.get("CONF_PORT") + "/"
        + ENV.get("CONF_DB") + "?sslmode=verify-ca&sslrootcert=" + ENV.get("CONF_CA")
        + "&connectTimeout=10" + (extra.isEmpty() ? "" : "&" + extra);
    Properties p = new Properties();
    p.setProperty("user", ENV.get("CONF_USER"));
    p.setProperty("password", ENV.get("CONF_PASSWORD"));
    Connection c = DriverManager.getConnection(url, p);
    OPEN.add(c);
    return c;
  }

  static Object[] expectError(Connection c, String sql) throws SQLException {
    try (Statement s = c.createStatement()) {
      return expectError(s, sql);
    }
  }

  static Object[] expectError(Statement s, String sql) {
    try {
      s.execute(sql);
      return new Object[] {false, "no error"};
    } catch (SQLException e) {
      return new Object[] {true, errorObs(e)};
    }
  }

  static List<Object> rows(ResultSet rs) throws SQLException {
    List<Object> out = new ArrayList<>();
    int n = rs.getMetaData().getColumnCount();
    while (rs.next()) {
      List<Object> row = new ArrayList<>();
      for (int i = 1; i <= n; i++) row.add(rs.getString(i));
      out.add(row);
    }
    return out;
  }

  static String sha(byte[] b) throws Exception {
    return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b));
  }

  public static void main(String[] args) throws Exception {
    String typesSql =
        new String(java.nio.file.Files.readAllBytes(java.nio.file.Path.of("types.sql")),
            StandardCharsets.UTF_8)
            .trim();
    Connection c = connect("");

    runCase("connect.metadata", () -> {
      DatabaseMetaData md = c.getMetaData();
      return new Object[] {true,
          Map.of("product", md.getDatabaseProductVersion(), "major", md.getDatabaseMajorVersion(),
              "user", md.getUserName() == null ? "" : "set", "pid_matches",
              ((PGConnection) c).getBackendPID() == queryInt(c, "select pg_backend_pid()"))};
    });
    runCase("simple.statement", () -> {
      try (Statement s = c.createStatement();
           ResultSet rs = s.executeQuery("select 1 as a, 'x' as b")) {
        return new Object[] {true, rows(rs)};
      }
    });
    runCase("simple.multi_statement", () -> {
      try (Statement s = c.createStatement()) {
        List<Object> out = new ArrayList<>();
        boolean rs =
            s.execute("select 1; select 2, 3; create temp table if not exists conf_j_m (a int)");
        while (true) {
          if (rs)
            out.add(rows(s.getResultSet()));
          else if (s.getUpdateCount() == -1)
            break;
          else
            out.add("update " + s.getUpdateCount());
          rs = s.getMoreResults();
        }
        return new Object[] {out.size() == 3, out};
      }
    });
    for (String mode : new String[] {"text", "binary"}) {
      // prepareThreshold=-1: server-prepared at once, results in binary where pgJDBC can.
      String extra = mode.equals("binary") ? "prepareThreshold=-1&binaryTransfer=true"
                                           : "prepareThreshold=0&binaryTransfer=false";
      runCase("types." + mode, () -> {
        try (Connection v = connect(extra);
             PreparedStatement ps = v.prepareStatement(typesSql + " where ? = 1")) {
          ps.setInt(1, 1);
          try (ResultSet rs = ps.executeQuery()) {
            Map<String, Object> m = new TreeMap<>();
            ResultSetMetaData md = rs.getMetaData();
            rs.next();
            for (int i = 1; i <= md.getColumnCount(); i++) {
              String val = md.getColumnTypeName(i).equals("bytea")
                  ? HexFormat.of().formatHex(rs.getBytes(i))
                  : rs.getString(i);
              m.put(md.getColumnLabel(i), md.getColumnTypeName(i) + " " + val);
            }
            return new Object[] {true, m};
          }
        }
      });
    }
    runCase("prepared.reuse_server_prepared", () -> {
      try (Connection v = connect("prepareThreshold=2");
           PreparedStatement ps = v.prepareStatement("select ?::int * 3, ?::text")) {
        List<Object> out = new ArrayList<>();
        for (int i = 0; i < 6; i++) {
          ps.setInt(1, i);
          ps.setString(2, "t" + i);
          try (ResultSet rs = ps.executeQuery()) {
            out.add(rows(rs));
          }
        }
        return new Object[] {out.size() == 6, out};
      }
    });
    runCase("prepared.batch_pipelined", () -> {
      try (Connection v = connect("reWriteBatchedInserts=false")) {
        v.createStatement().execute("create temp table conf_j_b (a int, b text)");
        try (PreparedStatement ps = v.prepareStatement("insert into conf_j_b values (?, ?)")) {
          for (int i = 0; i < 500; i++) {
            ps.setInt(1, i);
            ps.setString(2, "r" + i);
            ps.addBatch();
          }
          int[] counts = ps.executeBatch();
          return new Object[] {counts.length == 500,
              Map.of("n", counts.length, "sum", queryInt(v, "select sum(a)::int from conf_j_b"))};
        }
      }
    });
    runCase("prepared.batch_error", () -> {
      try (Connection v = connect("")) {
        v.createStatement().execute("create temp table conf_j_be (a int primary key)");
        try (PreparedStatement ps = v.prepareStatement("insert into conf_j_be values (?)")) {
          for (int i : new int[] {1, 2, 2, 3}) {
            ps.setInt(1, i);
            ps.addBatch();
          }
          ps.executeBatch();
          return new Object[] {false, "no error"};
        } catch (BatchUpdateException e) {
          return new Object[] {true,
              Map.of("error", errorObs(e.getNextException() != null ? e.getNextException() : e),
                  "count", queryInt(v, "select count(*)::int from conf_j_be"))};
        }
      }
    });
    runCase("cursor.fetch_size_portal", () -> {
      try (Connection v = connect("")) {
        v.setAutoCommit(false);
        try (PreparedStatement ps =
                 v.prepareStatement("select g, md5(g::text) from generate_series(1, 1000) g")) {
          ps.setFetchSize(100);
          int n = 0;
          try (ResultSet rs = ps.executeQuery()) {
            while (rs.next()) n++;
          }
          v.commit();
          return new Object[] {n == 1000, n};
        }
      }
    });
    runCase("transaction.rollback_savepoint", () -> {
      try (Connection v = connect("")) {
        v.setAutoCommit(false);
        Statement s = v.createStatement();
        s.execute("create temp table conf_j_t (a int)");
        s.execute("insert into conf_j_t values (1)");
        Savepoint sp = v.setSavepoint();
        Object[] err = expectError(v, "select 1/0");
        v.rollback(sp);
        s.execute("insert into conf_j_t values (2)");
        v.commit();
        return new Object[] {err[0],
            Map.of("error", err[1], "sum", queryInt(v, "select sum(a)::int from conf_j_t"))};
      }
    });
    for (String[] e :
        new String[][] {{"syntax", "selec 1"}, {"syntax_position", "select 1 from from t"},
            {"undefined_column", "select nope from pg_class"}, {"division_by_zero", "select 1/0"},
            {"raise",
                "do $$ begin raise exception 'custom %', 42 using detail = 'the detail', hint = 'the hint', errcode = 'P0042'; end $$"}}) {
      runCase("error." + e[0], () -> expectError(c, e[1]));
      runCase("error." + e[0] + "_prepared", () -> {
        try (PreparedStatement ps = c.prepareStatement(e[1])) {
          ps.execute();
          return new Object[] {false, "no error"};
        } catch (SQLException x) {
          return new Object[] {true, errorObs(x)};
        }
      });
    }
    runCase("error.warnings", () -> {
      try (Statement s = c.createStatement()) {
        s.execute("do $$ begin raise notice 'n1'; raise warning 'w1'; end $$");
        List<Object> w = new ArrayList<>();
        for (SQLWarning x = s.getWarnings(); x != null; x = x.getNextWarning()) w.add(errorObs(x));
        return new Object[] {w.size() == 2, w};
      }
    });
    runCase("empty.statement", () -> {
      try (Statement s = c.createStatement()) {
        boolean rs = s.execute("");
        return new Object[] {true, Map.of("resultSet", rs, "updateCount", s.getUpdateCount())};
      }
    });
    runCase("empty.prepared", () -> {
      try (PreparedStatement s = c.prepareStatement(";")) {
        boolean rs = s.execute();
        return new Object[] {true, Map.of("resultSet", rs, "updateCount", s.getUpdateCount())};
      }
    });
    runCase("notify.pid_matches_backend", () -> {
      try (Connection v = connect("")) {
        Statement s = v.createStatement();
        s.execute("listen conf_j_chan");
        s.execute("notify conf_j_chan, 'jp'");
        PGNotification[] ns = ((PGConnection) v).getNotifications(10000);
        int pid = ((PGConnection) v).getBackendPID();
        boolean same = ns != null && ns.length == 1 && ns[0].getPID() == pid
            && pid == queryInt(v, "select pg_backend_pid()");
        return new Object[] {same,
            Map.of("n", ns == null ? 0 : ns.length, "payload",
                ns == null || ns.length == 0 ? "" : ns[0].getParameter(), "same_pid", same)};
      }
    });
    runCase("cancel.statement", () -> {
      try (Connection v = connect(""); Statement s = v.createStatement()) {
        int pid = ((PGConnection) v).getBackendPID();
        Future<?> canceller = POOL.submit(() -> {
          try (Connection w = connect("")) {
            while (queryInt(w,
                       "select count(*)::int from pg_stat_activity where pid = " + pid
                           + " and state = 'active'")
                == 0) {
            }
            s.cancel();
          }
          return null;
        });
        Object[] err = expectError(s, "select pg_sleep(30)");
        canceller.get();
        return new Object[] {err[0], Map.of("error", err[1], "after", queryInt(v, "select 1"))};
      }
    });
    runCase("cancel.query_timeout", () -> {
      try (Connection v = connect(""); Statement s = v.createStatement()) {
        s.setQueryTimeout(1);
        Object[] err = expectError(s, "select pg_sleep(30)");
        return new Object[] {err[0], Map.of("error", err[1], "after", queryInt(v, "select 1"))};
      }
    });
    int rowsN = FULL ? 1000000 : 10000;
    for (String[] fmt :
        new String[][] {{"text", ""}, {"csv", "(format csv)"}, {"binary", "(format binary)"}}) {
      runCase("copy.roundtrip_" + fmt[0], () -> {
        try (Connection v = connect("")) {
          CopyManager cm = ((PGConnection) v).getCopyAPI();
          ByteArrayOutputStream out = new ByteArrayOutputStream();
          long n = cm.copyOut("copy (select g, 'v' || g, g * 1.5 from generate_series(1, " + rowsN
                  + ") g) to stdout " + fmt[1],
              out);
          v.createStatement().execute("create temp table conf_j_c (a int, b text, c numeric)");
          long m = cm.copyIn(
              "copy conf_j_c from stdin " + fmt[1], new ByteArrayInputStream(out.toByteArray()));
          return new Object[] {n == rowsN && m == rowsN,
              Map.of("out", n, "in", m, "sha256", sha(out.toByteArray()), "sum",
                  queryInt(v, "select (sum(a) % 1000000)::int from conf_j_c"))};
        }
      });
    }
    runCase("copy.in_error", () -> {
      try (Connection v = connect("")) {
        v.createStatement().execute("create temp table conf_j_ce (a int)");
        CopyManager cm = ((PGConnection) v).getCopyAPI();
        try {
          cm.copyIn("copy conf_j_ce from stdin", new ByteArrayInputStream("1\nxx\n".getBytes()));
          return new Object[] {false, "no error"};
        } catch (SQLException e) {
          return new Object[] {true,
              Map.of("error", errorObs(e), "after",
                  queryInt(v, "select count(*)::int from conf_j_ce"))};
        }
      }
    });
    runCase("startup.options", () -> {
      try (Connection v = connect("ApplicationName=conf-jdbc&currentSchema=pg_catalog,public"
               + "&options=-c%20conf.var=j1%20-c%20statement_timeout=5678")) {
        try (Statement s = v.createStatement();
             ResultSet rs = s.executeQuery(
                 "select current_setting('application_name'), current_setting('search_path'),"
                 + " current_setting('conf.var', true), current_setting('statement_timeout')")) {
          List<Object> r = rows(rs);
          return new Object[] {r.toString().contains("j1"), r};
        }
      }
    });
    runCase("startup.bad_value", () -> {
      try (Connection v = connect("options=-c%20work_mem=lots")) {
        return new Object[] {false, "connected"};
      } catch (SQLException e) {
        return new Object[] {true, errorObs(e)};
      }
    });
    runCase("auth.wrong_password", () -> {
      Properties p = new Properties();
      p.setProperty("user", ENV.get("CONF_USER"));
      p.setProperty("password", "wrong-password");
      try (Connection v = DriverManager.getConnection("jdbc:postgresql://" + ENV.get("CONF_HOST")
                   + ":" + ENV.get("CONF_PORT") + "/" + ENV.get("CONF_DB") + "?sslmode=require",
               p)) {
        return new Object[] {false, "connected"};
      } catch (SQLException e) {
        return new Object[] {
            "28P01".equals(e.getSQLState()), Map.of("sqlstate", String.valueOf(e.getSQLState()))};
      }
    });
    for (String mode : new String[] {"disable", "prefer", "require", "verify-ca"}) {
      runCase("tls." + mode, () -> {
        try (Connection v = connect("sslmode=" + mode)) {
          return new Object[] {true, Map.of("v", queryInt(v, "select 1"))};
        }
      });
    }
    runCase("params.65535", () -> {
      int n = 65535;
      StringBuilder sb = new StringBuilder("select array_length(array[");
      for (int i = 0; i < n; i++) sb.append(i == 0 ? "?" : ",?");
      sb.append("]::int[], 1)");
      try (PreparedStatement ps = c.prepareStatement(sb.toString())) {
        for (int i = 1; i <= n; i++) ps.setInt(i, i);
        try (ResultSet rs = ps.executeQuery()) {
          List<Object> r = rows(rs);
          return new Object[] {r.toString().contains("65535"), r};
        }
      }
    });
    int m2 = 2 * 1024 * 1024;
    runCase("large.result_2mib", LARGE_TIMEOUT_S, false, () -> {
      try (Connection v = connect("")) {
        String s = queryString(v, "select repeat('x', " + m2 + ")");
        return new Object[] {s.length() == m2, Map.of("length", s.length())};
      }
    });
    runCase("large.param_2mib", LARGE_TIMEOUT_S, false, () -> {
      try (Connection v = connect("");
           PreparedStatement ps = v.prepareStatement("select length(?::text)")) {
        ps.setString(1, "y".repeat(m2));
        try (ResultSet rs = ps.executeQuery()) {
          rs.next();
          return new Object[] {rs.getInt(1) == m2, Map.of("length", rs.getInt(1))};
        }
      }
    });
    runCase("large.bytea_100mb", LARGE_TIMEOUT_S, true, () -> {
      try (Connection v = connect("");
           PreparedStatement ps = v.prepareStatement("select ?::bytea")) {
        byte[] data = new byte[100 * 1024 * 1024];
        Arrays.fill(data, (byte) 7);
        ps.setBytes(1, data);
        try (ResultSet rs = ps.executeQuery()) {
          rs.next();
          return new Object[] {
              Arrays.equals(rs.getBytes(1), data), Map.of("length", rs.getBytes(1).length)};
        }
      }
    });
    System.exit(0);
  }

  static int queryInt(Connection c, String sql) throws SQLException {
    try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
      rs.next();
      return rs.getInt(1);
    }
  }

  static String queryString(Connection c, String sql) throws SQLException {
    try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
      rs.next();
      return rs.getString(1);
    }
  }
}
