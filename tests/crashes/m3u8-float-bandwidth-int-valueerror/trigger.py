# m3u8 0.3.0: a master playlist whose BANDWIDTH attribute is written as a decimal
# ("66406.2") is parsed with int() and raises ValueError (PR #91, issue #97);
# 0.3.1 parses it as int(float(x)).
import m3u8

playlist = m3u8.loads(
    "#EXTM3U\n"
    "#EXT-X-VERSION:3\n"
    "#EXT-X-STREAM-INF:BANDWIDTH=66406.2,RESOLUTION=640x360\n"
    "chunks.m3u8\n"
)
for variant in playlist.playlists:
    print(variant.uri, variant.stream_info.bandwidth, variant.stream_info.resolution)
