import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsBoolean,
  IsIn,
  IsOptional,
  IsString,
  MaxLength,
  MinLength,
} from 'class-validator';
import { WEBHOOK_EVENTS } from '#shared/api/types.js';

export class CreateWebhookDto {
  @ApiProperty({ type: String, maxLength: 2000, description: 'http(s) URL deliveries are POSTed to' })
  @IsString()
  @MaxLength(2000)
  url: string;
  @ApiProperty({ type: [String], enum: WEBHOOK_EVENTS })
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(WEBHOOK_EVENTS.length)
  @IsIn(WEBHOOK_EVENTS, { each: true, message: `each value in events must be one of ${WEBHOOK_EVENTS.join(', ')}` })
  events: string[];
  @ApiProperty({ type: String, minLength: 8, maxLength: 500, description: 'the HMAC key of X-Cuttle-Signature' })
  @IsString()
  @MinLength(8)
  @MaxLength(500)
  secret: string;
}

/** What PATCH changes; a field left out keeps its value. */
export class UpdateWebhookDto {
  @ApiPropertyOptional({ type: String, maxLength: 2000 })
  @IsOptional()
  @IsString()
  @MaxLength(2000)
  url?: string;
  @ApiPropertyOptional({ type: [String], enum: WEBHOOK_EVENTS })
  @IsOptional()
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(WEBHOOK_EVENTS.length)
  @IsIn(WEBHOOK_EVENTS, { each: true, message: `each value in events must be one of ${WEBHOOK_EVENTS.join(', ')}` })
  events?: string[];
  @ApiPropertyOptional({ type: String, minLength: 8, maxLength: 500 })
  @IsOptional()
  @IsString()
  @MinLength(8)
  @MaxLength(500)
  secret?: string;
  @ApiPropertyOptional({ type: Boolean, description: 'a disabled webhook gets no new deliveries; pending ones wait' })
  @IsOptional()
  @IsBoolean()
  disabled?: boolean;
}
