// Helpers for bench/hdfs/run that need Hadoop's FileSystem API (compiled by the bench with
// javac against the testbed's Hadoop jars; the cluster's client-conf comes first on the
// classpath, so unqualified paths are on that cluster).
//
//   BenchFs mkfiles DIR COUNT THREADS PER_DIR   empty files DIR/dNNNNN/fNNNNNNNN, THREADS at once
//                                               (create and complete RPCs, no output streams)
//   BenchFs checksums DIR                       one line per file under DIR (sorted):
//                                               relative path, length, composite CRC32C
//
// Composite CRCs (dfs.checksum.combine.mode=COMPOSITE_CRC) depend only on the bytes, not on
// block size or the DataNodes that hold them, so a restored file and its source compare.

import java.util.ArrayList;
import java.util.Collections;
import java.util.EnumSet;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.crypto.CryptoProtocolVersion;
import org.apache.hadoop.fs.CreateFlag;
import org.apache.hadoop.fs.FileChecksum;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocatedFileStatus;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RemoteIterator;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.hdfs.DFSClient;
import org.apache.hadoop.hdfs.DistributedFileSystem;
import org.apache.hadoop.hdfs.protocol.ClientProtocol;
import org.apache.hadoop.hdfs.protocol.HdfsFileStatus;
import org.apache.hadoop.io.EnumSetWritable;

public class BenchFs {
    public static void main(String[] args) throws Exception {
        Configuration conf = new Configuration();
        conf.set("dfs.checksum.combine.mode", "COMPOSITE_CRC");
        FileSystem fs = FileSystem.get(conf);
        switch (args.length > 0 ? args[0] : "") {
            case "mkfiles":
                mkfiles(fs, new Path(args[1]), Long.parseLong(args[2]), Integer.parseInt(args[3]),
                        Integer.parseInt(args[4]));
                break;
            case "checksums":
                checksums(fs, new Path(args[1]));
                break;
            default:
                System.err.println("usage: BenchFs mkfiles DIR COUNT THREADS PER_DIR | checksums DIR");
                System.exit(2);
        }
        fs.close();
    }

    /** COUNT empty files, PER_DIR to a directory; each thread takes whole directories. */
    static void mkfiles(FileSystem fs, Path dir, long count, int threads, int perDir) throws Exception {
        DFSClient dfs = ((DistributedFileSystem) fs).getClient();
        ClientProtocol nn = dfs.getNamenode();
        String client = dfs.getClientName();
        long dirs = (count + perDir - 1) / perDir;
        AtomicLong next = new AtomicLong();
        AtomicLong done = new AtomicLong();
        long t0 = System.nanoTime();
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        List<Future<?>> jobs = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            jobs.add(pool.submit(() -> {
                for (long d; (d = next.getAndIncrement()) < dirs; ) {
                    Path sub = new Path(dir, String.format("d%05d", d));
                    fs.mkdirs(sub);
                    long first = d * perDir, last = Math.min(count, first + perDir);
                    String parent = sub.toUri().getPath();
                    for (long f = first; f < last; f++) {
                        // Straight to the NameNode, as NNThroughputBenchmark does: one create and
                        // one complete RPC (an output stream would start a streamer thread per
                        // file and cost the client more CPU than the NameNode spends).
                        String path = parent + String.format("/f%08d", f);
                        HdfsFileStatus st = nn.create(path, FsPermission.getFileDefault(), client,
                                new EnumSetWritable<>(EnumSet.of(CreateFlag.CREATE)), false, (short) 1,
                                128L << 20, CryptoProtocolVersion.supported(), null, null);
                        nn.complete(path, client, null, st.getFileId());
                    }
                    long n = done.addAndGet(last - first);
                    if (d % 100 == 0) {
                        System.err.printf("%d files, %.0f/s%n", n, n / ((System.nanoTime() - t0) / 1e9));
                    }
                }
                return null;
            }));
        }
        for (Future<?> j : jobs) {
            j.get();
        }
        pool.shutdown();
        System.out.printf("%d files in %.1f s%n", count, (System.nanoTime() - t0) / 1e9);
    }

    static void checksums(FileSystem fs, Path dir) throws Exception {
        Path base = fs.getFileStatus(dir).getPath();
        String prefix = base.toUri().getPath();
        List<String> lines = new ArrayList<>();
        RemoteIterator<LocatedFileStatus> it = fs.listFiles(base, true);
        while (it.hasNext()) {
            LocatedFileStatus st = it.next();
            FileChecksum sum = fs.getFileChecksum(st.getPath());
            String rel = st.getPath().toUri().getPath().substring(prefix.length());
            lines.add(rel + "\t" + st.getLen() + "\t" + (sum == null ? "-" : hex(sum.getBytes())));
        }
        Collections.sort(lines);
        StringBuilder out = new StringBuilder();
        for (String l : lines) {
            out.append(l).append('\n');
        }
        System.out.print(out);
    }

    static String hex(byte[] b) {
        StringBuilder s = new StringBuilder();
        for (byte x : b) {
            s.append(String.format("%02x", x));
        }
        return s.toString();
    }
}
