// Readiness probe of the dev stack: answers a CQL query, or exits non-zero.
// Run as a single-file program with Cassandra's own jars on the class path
// (they include the 3.x Java driver):
//   java -cp '.stack/cassandra/lib/*' infra/cassandra/CqlPing.java 127.0.0.1 9042

import com.datastax.driver.core.Cluster;
import com.datastax.driver.core.Session;

public class CqlPing {
    public static void main(String[] args) {
        String host = args.length > 0 ? args[0] : "127.0.0.1";
        int port = args.length > 1 ? Integer.parseInt(args[1]) : 9042;
        try (Cluster cluster = Cluster.builder()
                .addContactPoint(host)
                .withPort(port)
                .withoutJMXReporting()
                .withoutMetrics()
                .build();
             Session session = cluster.connect()) {
            String version = session.execute("SELECT release_version FROM system.local").one().getString(0);
            System.out.println("cassandra " + version);
        } catch (Exception e) {
            System.err.println(e.getMessage());
            System.exit(1);
        }
    }
}
