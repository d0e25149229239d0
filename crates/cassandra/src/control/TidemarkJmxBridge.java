// tidemark agent's JMX bridge: one small JVM that stays connected to the
// node's JMX port and runs the few operations Cassandra offers no CQL for
// (ring status, snapshot, clearsnapshot, import). It replaces one nodetool
// JVM start per operation (about a second of CPU each) by a round trip.
//
// Written by the agent into its work dir and run in source-file mode
// (`java TidemarkJmxBridge.java`): it needs only the JDK (javax.management),
// no Cassandra classes, and calls the MBeans by name and signature.
//
// Protocol, UTF-8 lines on stdin/stdout; fields separated by TAB, and inside
// a field backslash, TAB, CR and LF written as \\ \t \r \n:
//   first line:  host  port  user  password   (user empty: no JMX auth)
//   requests:    status | snapshot TAG | clear TAG | import KS TABLE DIR
//   replies:     ok PAYLOAD | err MESSAGE      (exactly one line each)
// The credentials come on stdin so that they never show in a process list.
// Anything the JDK prints goes to stderr, never into the protocol.

import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import javax.management.MBeanException;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.ReflectionException;
import javax.management.RuntimeMBeanException;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

public class TidemarkJmxBridge {
    static final String SS = "org.apache.cassandra.db:type=StorageService";
    static final String SNITCH = "org.apache.cassandra.db:type=EndpointSnitchInfo";
    static final String STR = "java.lang.String";
    static final String STRS = "[Ljava.lang.String;";
    static final String MAP = "java.util.Map";

    private final JMXServiceURL url;
    private final Map<String, Object> env = new HashMap<>();
    private JMXConnector connector;
    private MBeanServerConnection mbs;

    TidemarkJmxBridge(String host, int port, String user, String password) throws IOException {
        String h = host.contains(":") ? "[" + host + "]" : host;
        url = new JMXServiceURL("service:jmx:rmi:///jndi/rmi://" + h + ":" + port + "/jmxrmi");
        if (!user.isEmpty()) {
            env.put(JMXConnector.CREDENTIALS, new String[] {user, password});
        }
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in =
            new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out =
            new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
        System.setOut(System.err);
        String first = in.readLine();
        if (first == null) {
            return;
        }
        String[] c = split(first);
        if (c.length != 4) {
            out.println("err\tfirst line must be: host port user password");
            return;
        }
        TidemarkJmxBridge bridge = new TidemarkJmxBridge(c[0], Integer.parseInt(c[1]), c[2], c[3]);
        String line;
        while ((line = in.readLine()) != null) {
            String reply;
            try {
                reply = "ok\t" + esc(bridge.handle(split(line)));
            } catch (Throwable t) {
                reply = "err\t" + esc(describe(t));
            }
            out.println(reply);
        }
        bridge.close();
    }

    String handle(String[] r) throws Exception {
        ensureConnected();
        switch (r[0]) {
            case "status":
                need(r, 1);
                return status();
            case "snapshot": {
                need(r, 2);
                // No entities: every keyspace; flushed first (skipFlush false),
                // as `nodetool snapshot -t TAG` does.
                Map<String, String> options = new HashMap<>();
                options.put("skipFlush", "false");
                mbs.invoke(new ObjectName(SS), "takeSnapshot",
                    new Object[] {r[1], options, new String[0]}, new String[] {STR, MAP, STRS});
                return "";
            }
            case "clear": {
                need(r, 2);
                mbs.invoke(new ObjectName(SS), "clearSnapshot",
                    new Object[] {new HashMap<String, Object>(), r[1], new String[0]},
                    new String[] {MAP, STR, STRS});
                return "";
            }
            case "import": {
                need(r, 4);
                return importSSTables(r[1], r[2], r[3]);
            }
            default:
                throw new IllegalArgumentException("unknown request " + r[0]);
        }
    }

    // The ring as `nodetool status` shows it: every node the node knows
    // (host ids, live, unreachable, joining, leaving, moving), one line each,
    // TAB between: address, U/D, N/J/L/M, host id, data center, rack.
    @SuppressWarnings("unchecked")
    String status() throws Exception {
        ObjectName ss = new ObjectName(SS);
        List<String> live = (List<String>) mbs.getAttribute(ss, "LiveNodesWithPort");
        List<String> down = (List<String>) mbs.getAttribute(ss, "UnreachableNodesWithPort");
        List<String> joining = (List<String>) mbs.getAttribute(ss, "JoiningNodesWithPort");
        List<String> leaving = (List<String>) mbs.getAttribute(ss, "LeavingNodesWithPort");
        List<String> moving = (List<String>) mbs.getAttribute(ss, "MovingNodesWithPort");
        Map<String, String> hostIds =
            (Map<String, String>) mbs.getAttribute(ss, "EndpointWithPortToHostId");
        Set<String> all = new LinkedHashSet<>(hostIds.keySet());
        all.addAll(live);
        all.addAll(down);
        all.addAll(joining);
        all.addAll(leaving);
        all.addAll(moving);
        ObjectName snitch = new ObjectName(SNITCH);
        StringBuilder b = new StringBuilder();
        for (String ep : all) {
            String state = joining.contains(ep) ? "J"
                : leaving.contains(ep) ? "L"
                : moving.contains(ep) ? "M" : "N";
            String dc = (String) mbs.invoke(snitch, "getDatacenter", new Object[] {ep}, new String[] {STR});
            String rack = (String) mbs.invoke(snitch, "getRack", new Object[] {ep}, new String[] {STR});
            String id = hostIds.getOrDefault(ep, "?");
            if (b.length() > 0) {
                b.append('\n');
            }
            b.append(String.join("\t", hostOf(ep), live.contains(ep) ? "U" : "D", state, id, dc, rack));
        }
        return b.toString();
    }

    // `nodetool import KS TABLE DIR` with its defaults: reset level, clear
    // repaired, verify SSTables and tokens, invalidate caches, no extended
    // verify, move (not copy), do not fail on a missing index, validate index
    // checksums. Returns the directories Cassandra could not import from.
    @SuppressWarnings("unchecked")
    String importSSTables(String ks, String table, String dir) throws Exception {
        ObjectName cfs = new ObjectName(
            "org.apache.cassandra.db:type=Tables,keyspace=" + ks + ",table=" + table);
        Set<String> dirs = new LinkedHashSet<>(Collections.singleton(dir));
        Object[] params = {dirs, true, true, true, true, true, false, false, false, true};
        String[] sig = new String[10];
        sig[0] = "java.util.Set";
        for (int i = 1; i < sig.length; i++) {
            sig[i] = "boolean";
        }
        List<String> failed = (List<String>) mbs.invoke(cfs, "importNewSSTables", params, sig);
        return String.join("\n", failed == null ? new ArrayList<String>() : failed);
    }

    // A node restart breaks the connection: probe it before each request
    // and connect again if it is gone.
    void ensureConnected() throws IOException {
        if (mbs != null) {
            try {
                mbs.getMBeanCount();
                return;
            } catch (IOException e) {
                close();
            }
        }
        connector = JMXConnectorFactory.connect(url, env);
        mbs = connector.getMBeanServerConnection();
    }

    void close() {
        if (connector != null) {
            try {
                connector.close();
            } catch (IOException e) {
                // Already gone.
            }
        }
        connector = null;
        mbs = null;
    }

    static String hostOf(String endpoint) {
        // "127.0.0.1:7000" or "[::1]:7000"
        if (endpoint.startsWith("[")) {
            return endpoint.substring(1, endpoint.indexOf(']'));
        }
        int i = endpoint.lastIndexOf(':');
        return i > 0 && endpoint.indexOf(':') == i ? endpoint.substring(0, i) : endpoint;
    }

    static void need(String[] r, int n) {
        if (r.length != n) {
            throw new IllegalArgumentException(r[0] + " takes " + (n - 1) + " argument(s)");
        }
    }

    // The cause an operator can act on, not the JMX wrappers around it.
    static String describe(Throwable t) {
        while ((t instanceof MBeanException || t instanceof ReflectionException
                || t instanceof RuntimeMBeanException || t.getClass().getName().startsWith("java.lang.reflect."))
            && t.getCause() != null) {
            t = t.getCause();
        }
        String m = t.getMessage();
        Throwable root = t;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        String s = t.getClass().getName() + (m == null ? "" : ": " + m);
        if (root != t && root.getMessage() != null && (m == null || !m.contains(root.getMessage()))) {
            s += " (caused by " + root.getClass().getName() + ": " + root.getMessage() + ")";
        }
        return s;
    }

    static String esc(String s) {
        StringBuilder b = new StringBuilder(s.length());
        for (char ch : s.toCharArray()) {
            switch (ch) {
                case '\\': b.append("\\\\"); break;
                case '\t': b.append("\\t"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                default: b.append(ch);
            }
        }
        return b.toString();
    }

    static String[] split(String line) {
        List<String> fields = new ArrayList<>();
        StringBuilder cur = new StringBuilder();
        for (int i = 0; i < line.length(); i++) {
            char ch = line.charAt(i);
            if (ch == '\t') {
                fields.add(cur.toString());
                cur.setLength(0);
            } else if (ch == '\\' && i + 1 < line.length()) {
                char n = line.charAt(++i);
                cur.append(n == 't' ? '\t' : n == 'n' ? '\n' : n == 'r' ? '\r' : n);
            } else {
                cur.append(ch);
            }
        }
        fields.add(cur.toString());
        return fields.toArray(new String[0]);
    }
}
