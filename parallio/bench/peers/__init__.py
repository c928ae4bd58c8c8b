"""The peers parallio is measured against: an asyncio (and uvloop) HTTP
server doing the same work, and nginx as the machine's practical limit."""
