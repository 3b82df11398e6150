"""/v1/jobs/{id}/stream.m3u8: a video job's finished blocks as HLS, playable while it renders
(``cluster.http.video_stream``). The same bearer token as every job route, for the playlist and each segment
(ffplay/ffprobe: ``-headers "Authorization: Bearer TOKEN"``); another tenant's job is unknown (404)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from cluster.http import replica
from cluster.http.auth import TenantOf
from cluster.http.errors import ApiError
from cluster.http.video_stream import (
    PLAYLIST_MEDIA,
    SEGMENT_MEDIA,
    BlocksGone,
    playlist,
    segment_bytes,
    video_stream,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


async def _record(job_id: str, tenant: dict) -> dict:
    return await replica.backend().call("get", job_id, tenant["name"])


@router.api_route(
    "/{job_id}/stream.m3u8",
    methods=["GET", "HEAD"],
    summary="A video job's HLS playlist: its finished blocks, while it renders (ENDLIST once it ended)",
    response_class=Response,
    responses={200: {"content": {PLAYLIST_MEDIA: {}}}},
)
async def stream_playlist(job_id: str, tenant: TenantOf) -> Response:
    stream = video_stream(await _record(job_id, tenant))
    return Response(playlist(stream), media_type=PLAYLIST_MEDIA, headers={"Cache-Control": "no-cache"})


@router.api_route(
    "/{job_id}/stream/{index}.ts",
    methods=["GET", "HEAD"],
    summary="One finished block of a video job as MPEG-TS (stream copy of its H.264 frames)",
    response_class=Response,
    responses={200: {"content": {SEGMENT_MEDIA: {}}}},
)
async def stream_segment(job_id: str, index: int, tenant: TenantOf) -> Response:
    record = await _record(job_id, tenant)
    try:
        data = await asyncio.to_thread(segment_bytes, video_stream(record), index)
    except BlocksGone:  # joined and removed while it was read: cut from the joined video
        try:
            data = await asyncio.to_thread(segment_bytes, video_stream(record), index)
        except BlocksGone as err:
            raise ApiError(
                503,
                "index",
                f"block {index} of job {job_id} cannot be read now: {err}",
                "service_unavailable",
            ) from None
    return Response(data, media_type=SEGMENT_MEDIA)
