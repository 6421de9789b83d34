"""The Carrier/Channel seam: flows see Channels, never SIP, RTP or the sandbox."""
