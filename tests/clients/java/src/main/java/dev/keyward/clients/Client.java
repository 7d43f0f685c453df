// A keyward client on grpc-java with its default channel options, over a Netty epoll Unix
// domain socket (grpc-java sends the socket path as :authority).
//
// Usage: java -cp CLASSPATH dev.keyward.clients.Client SOCKET KEY_ID MISSING_KEY_ID MESSAGE_FILE
//
// Prints one JSON object: the key ids, the public key PEM of KEY_ID, a SHA-256 ECDSA signature
// (DER, base64) over MESSAGE_FILE, and the status of a call for MISSING_KEY_ID.
package dev.keyward.clients;

import com.google.protobuf.ByteString;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollDomainSocketChannel;
import io.grpc.netty.shaded.io.netty.channel.epoll.EpollEventLoopGroup;
import io.grpc.netty.shaded.io.netty.channel.unix.DomainSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.concurrent.TimeUnit;
import keyward.v1.Keyward.GetPublicKeyRequest;
import keyward.v1.Keyward.GetPublicKeyResponse;
import keyward.v1.Keyward.KeyInfo;
import keyward.v1.Keyward.ListKeysRequest;
import keyward.v1.Keyward.SignRequest;
import keyward.v1.Keyward.SignResponse;
import keyward.v1.Keyward.SignatureAlgorithm;
import keyward.v1.Keyward.SignatureFormat;
import keyward.v1.SignerGrpc;

public final class Client {
  private Client() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 4) {
      System.err.println("usage: Client SOCKET KEY_ID MISSING_KEY_ID MESSAGE_FILE");
      System.exit(2);
    }
    String socket = args[0], keyId = args[1], missing = args[2];
    byte[] digest = MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(Path.of(args[3])));

    EpollEventLoopGroup group = new EpollEventLoopGroup(1);
    ManagedChannel channel =
        NettyChannelBuilder.forAddress(new DomainSocketAddress(socket))
            .eventLoopGroup(group)
            .channelType(EpollDomainSocketChannel.class)
            .usePlaintext()
            .build();
    try {
      SignerGrpc.SignerBlockingStub signer =
          SignerGrpc.newBlockingStub(channel).withDeadlineAfter(30, TimeUnit.SECONDS);
      List<String> keys = new ArrayList<>();
      for (KeyInfo key : signer.listKeys(ListKeysRequest.getDefaultInstance()).getKeysList()) {
        keys.add(key.getKeyId());
      }
      GetPublicKeyResponse publicKey =
          signer.getPublicKey(GetPublicKeyRequest.newBuilder().setKeyId(keyId).build());
      SignResponse signature =
          signer.sign(
              SignRequest.newBuilder()
                  .setKeyId(keyId)
                  .setAlgorithm(SignatureAlgorithm.SIGNATURE_ALGORITHM_ECDSA_SHA256)
                  .setDigest(ByteString.copyFrom(digest))
                  .setFormat(SignatureFormat.SIGNATURE_FORMAT_DER)
                  .setPurpose("grpc-java client test")
                  .build());
      Status error = Status.OK;
      try {
        signer.getPublicKey(GetPublicKeyRequest.newBuilder().setKeyId(missing).build());
      } catch (StatusRuntimeException e) {
        error = e.getStatus();
      }
      StringBuilder json = new StringBuilder("{\"keys\":[");
      for (int i = 0; i < keys.size(); i++) {
        json.append(i == 0 ? "" : ",").append(quote(keys.get(i)));
      }
      json.append("],\"public_key_pem\":").append(quote(publicKey.getPublicKeyPem()));
      json.append(",\"signature\":")
          .append(quote(Base64.getEncoder().encodeToString(signature.getSignature().toByteArray())));
      json.append(",\"error_code\":").append(quote(error.getCode().name()));
      json.append(",\"error_message\":")
          .append(quote(error.getDescription() == null ? "" : error.getDescription()));
      System.out.println(json.append('}'));
    } finally {
      channel.shutdownNow().awaitTermination(10, TimeUnit.SECONDS);
      group.shutdownGracefully(0, 1, TimeUnit.SECONDS).sync();
    }
  }

  /** A JSON string literal. */
  private static String quote(String s) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      switch (c) {
        case '"' -> out.append("\\\"");
        case '\\' -> out.append("\\\\");
        case '\n' -> out.append("\\n");
        default -> {
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
        }
      }
    }
    return out.append('"').toString();
  }
}
