"""The ``sip`` carrier: calls placed through SIP trunks, their audio on the RTP media engine.

- ``trunks``: the trunks file, routing accounts to trunks, writing numbers.
- ``capacity``: a trunk's channel and calls-per-second limits.
- ``carrier``: ``SipCarrier`` and its attempts (SIP events to call progress).
- ``channel``: ``SipChannel``, the flow's verbs on a leg's RTP session.
"""
