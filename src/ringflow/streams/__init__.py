"""Streaming calls to voice bots over WebSocket (Exotel's AgentStream protocol).

``target`` checks a stream URL, ``client`` opens the socket, ``protocol`` is the message
protocol without sockets, ``stream`` carries one stream on a Channel, ``service`` starts streams
under each account's limit and finds a call's streams to stop them.
"""
